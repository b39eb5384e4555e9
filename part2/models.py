"""Fully connected GAN for MNIST: generator, discriminator, and saving and loading a generator."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cs324_utils import UserError, all_finite, atomic_save
from file_checks import read_checkpoint

IMG_SHAPE = (1, 28, 28)
IMG_PIXELS = 28 * 28
MAX_LATENT_DIM = 100_000  # a file claiming more is damaged, not a generator of this repository


class Generator(nn.Module):
    """z (B, latent_dim) -> image (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100) -> None:
        super().__init__()
        self.latent_dim = latent_dim

        def block(n_in: int, n_out: int, norm: bool = True) -> list[nn.Module]:
            # The Linear bias is redundant in front of BatchNorm (its mean subtraction removes it).
            layers: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm1d(n_out))  # default eps; PyTorch-GAN's (n, 0.8) sets eps=0.8
            layers.append(nn.LeakyReLU(0.2))
            return layers

        self.net = nn.Sequential(
            *block(latent_dim, 128, norm=False),
            *block(128, 256),
            *block(256, 512),
            *block(512, 1024),
            nn.Linear(1024, IMG_PIXELS),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *IMG_SHAPE)


class Dropout(nn.Dropout):
    """nn.Dropout with the keep mask drawn as uniform >= p: the same Bernoulli(1 - p) mask and
    1 / (1 - p) scaling, but cheaper on CPU, where bernoulli_ is slow (bench_gan.py's "dropout
    masks" line times both). p = 0 and eval mode return the input untouched.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        # The uniforms are float32 whatever x's dtype: a bf16 uniform has only 8 bits.
        mask = (torch.rand(x.shape, device=x.device) >= self.p).to(x.dtype).mul_(1 / (1 - self.p))
        return x * mask


class Discriminator(nn.Module):
    """image (B, 1, 28, 28) or (B, 784) -> logit (B,); the loss applies the sigmoid.

    dropout > 0 adds Dropout after each hidden layer (active in training only), which keeps D from
    memorising the training images and overpowering G late in training (see report.md).
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        # The Dropout modules are there even at p=0, so the weight names do not depend on the setting.
        self.net = nn.Sequential(
            nn.Linear(IMG_PIXELS, 512),
            nn.LeakyReLU(0.2),
            Dropout(dropout),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2),
            Dropout(dropout),
            nn.Linear(256, 1),
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img.reshape(img.shape[0], -1)).squeeze(1)


def parameter_count(latent_dim: int) -> tuple[int, int]:
    """Parameters of Generator(latent_dim) and of Discriminator, counted without building them."""
    widths = (128, 256, 512, 1024)
    n_g = latent_dim * 128 + 128  # the first block: Linear with bias, no BatchNorm
    n_g += sum(a * b + 2 * b for a, b in zip(widths, widths[1:]))  # Linear without bias, BatchNorm weight and bias
    n_g += 1024 * IMG_PIXELS + IMG_PIXELS
    n_d = IMG_PIXELS * 512 + 512 + 512 * 256 + 256 + 256 + 1
    return n_g, n_d


def save_generator(generator: Generator, path: str | Path, half: bool = False) -> None:
    """Save generator weights alone (optionally float16, to keep committed files small).

    Weights that are not finite (a diverged run, or float16 overflow) are refused, not written.
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in generator.state_dict().items()}
    if not all_finite(state):
        raise UserError(f"generator weights are not finite{' in float16' if half else ''}; {path} not written")
    atomic_save({"kind": "generator", "latent_dim": generator.latent_dim, "state_dict": state}, path)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Generator in eval mode from a file of save_generator or a training checkpoint of my_gan.py; every
    field checked (a damaged or hand-edited file is one line naming the field)."""
    ckpt = read_checkpoint(path, "generator file")
    if ckpt.raw("kind", None) == "generator":
        latent_dim, key = ckpt.int("latent_dim", 1, MAX_LATENT_DIM), "state_dict"
    elif ckpt.has("generator") and ckpt.has("config"):
        latent_dim, key = ckpt.fields("config").int("latent_dim", 1, MAX_LATENT_DIM), "generator"
    else:
        raise UserError(f"{path} is not a generator file or a GAN checkpoint of this repository")
    generator = Generator(latent_dim)
    generator.load_state_dict(ckpt.state_dict(key, generator))  # float16 files are widened by the copy
    return generator.to(device).eval()

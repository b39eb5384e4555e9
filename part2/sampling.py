"""Seeded latents and batched, eval-mode generation: shared by evaluate.py, interpolate.py and the notebooks."""
from __future__ import annotations

import torch
from torch import nn


def latents(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """z (n, latent_dim) ~ N(0, I) from its own CPU generator: the same seed gives the same z on any device."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Images (N, 1, 28, 28) on the CPU from z (N, latent_dim), in eval mode; the generator's mode is restored."""
    was_training = generator.training
    generator.eval()  # BatchNorm would otherwise make each image depend on the rest of its batch
    device = next(generator.parameters()).device
    out = [generator(z[i:i + batch_size].to(device)).cpu() for i in range(0, z.shape[0], batch_size)]
    generator.train(was_training)
    return torch.cat(out)

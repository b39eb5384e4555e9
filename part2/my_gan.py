"""Part II: train a fully connected GAN on MNIST; 5x5 sample grids at the start, halfway and end.

    cd part2 && python my_gan.py --n_epochs 200
    python my_gan.py --n_epochs 200 --resume        # continue a stopped run (Ctrl-C saves it)
    python my_gan.py --help                         # every setting with its default

Read top to bottom, this is the assignment: the settings (Config), the models (models.py), the two
losses of objective (10) (train_step), the loop (train) and the grids (save_grid). Four stabilisers
are on by default (stabilisers.py; report.md measures each); `--d_dropout 0 --label_smoothing 0
--ema 0 --lr_decay none` is the template's plain recipe. What a long run needs besides (its folder
and checkpoints, --resume, stop signals, the precision and thread choices) lives in gan_run.py and
is used through the calls on `run`; every other line is the GAN.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cs324_utils import OneLineParser, TrainingFailed, UserError, atomic_write, check_seed, run_cli
from gan_run import GanRun
from mnist_data import load_mnist
from models import Discriminator, Generator
from stabilisers import WeightAverage, lr_at

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    """The settings of a run: the course template's, plus the four stabilisers and how the run is kept."""

    n_epochs: int = 200
    batch_size: int = 64
    lr: float = 0.0002
    latent_dim: int = 100
    save_interval: int = 500  # a grid every N iterations
    data_dir: str = str(HERE / "data")
    download: bool = True  # fetch MNIST into data_dir when it is missing
    seed: int = 0
    # The stabilisers (stabilisers.py); 0, 0, 0, "none" is the template's recipe.
    d_dropout: float = 0.1  # dropout after each hidden layer of D
    label_smoothing: float = 0.1  # D's target for real images is 1 - this; fakes keep 0
    ema: float = 0.999  # decay of the moving average of G's weights that grids and saved generators show
    lr_decay: str = "linear"  # constant for the first half, then down to 0 at the last iteration
    # How the run is kept and where it runs (gan_run.py).
    out: str = str(HERE / "runs" / "gan")
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast or fp32; auto: the faster on this machine
    threads: int = 0  # 0: the cores idle at start-up, looked at again every 5 s
    eval_scores: bool = False  # score the start/half/end generators when training ends (evaluate.py)

    def validated(self) -> Config:
        """Refuse impossible values before any data or model is touched; returns the resolved settings."""
        for name in ("n_epochs", "batch_size", "latent_dim", "save_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 10**15:
                raise UserError(f"--{name} must be a positive integer up to 10^15, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive number, got {self.lr!r}")
        check_seed(self.seed)
        for name in ("d_dropout", "label_smoothing", "ema"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise UserError(f"--{name} must be in [0, 1), got {value!r}")
        if self.lr_decay not in ("none", "linear"):
            raise UserError(f"--lr_decay must be none or linear, got {self.lr_decay!r}")
        # A resume compares where the data is, not how its path was typed.
        return replace(self, data_dir=str(Path(self.data_dir).resolve()))


# ----------------------------------------------------------------------------- objective (10)


def train_step(generator: Generator, discriminator: Discriminator, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, real: torch.Tensor, autocast, real_label: float = 1.0) -> torch.Tensor:
    """One update of D, then one of G, on a batch of real images (B, 1, 28, 28).

    Returns the detached [loss_d, loss_g, D(x), D(G(z))] (no host sync: the loop never waits).
    real_label < 1 is one-sided label smoothing: D gains nothing from ever more confident logits.
    One generator forward serves both updates: D sees it detached, then G backpropagates through
    the same graph (G's weights have not changed in between).
    """
    b = real.shape[0]
    z = torch.randn(b, generator.latent_dim, device=real.device)  # (B, latent)
    with autocast():
        fake = generator(z)  # (B, 1, 28, 28)
        # D has no BatchNorm, so real and fake can share one forward (one larger matmul per layer).
        logits = discriminator(torch.cat([real.to(fake.dtype), fake.detach()])).float()  # (2B,)
    # D maximises log D(x) + log(1 - D(G(z))): binary cross-entropy with targets 1 (real) and 0 (fake),
    # averaged over the 2B images (the template's (loss on real + loss on fake) / 2).
    target = torch.cat([torch.full((b,), real_label, device=real.device), torch.zeros(b, device=real.device)])
    loss_d = F.binary_cross_entropy_with_logits(logits, target)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    # D's weight gradients in the G step would be thrown away (zeroed before D's next update): skip them.
    discriminator.requires_grad_(False)
    with autocast():  # a new autocast region: the bf16 copies of D's weights must be the updated ones
        logits_gen = discriminator(fake).float()  # (B,)
    # G minimises -log D(G(z)), the non-saturating form of log(1 - D(G(z))): the same fixed point, but
    # early on, when D rejects fakes easily, log(1 - D) is flat while -log D gives a strong gradient.
    loss_g = F.binary_cross_entropy_with_logits(logits_gen, torch.ones(b, device=real.device))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    discriminator.requires_grad_(True)

    with torch.no_grad():
        probs = torch.sigmoid(logits)
        return torch.stack([loss_d.detach(), loss_g.detach(), probs[:b].mean(), probs[b:].mean()])


def adam(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with betas (0.5, 0.999), as DCGAN; one fused kernel where the device has it."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999),
                            fused=True if device.type in ("cpu", "cuda") else None)


@torch.no_grad()
def save_grid(generator: Generator, noise: torch.Tensor, path: Path) -> None:
    """The samples of `noise` as a 5x5 grid, drawn in eval mode: BatchNorm uses its running statistics,
    so a sample does not depend on the rest of its batch."""
    was_training = generator.training
    images = generator.eval()(noise).float()  # (25, 1, 28, 28) in [-1, 1]
    generator.train(was_training)
    if not bool(torch.isfinite(images).all()):
        raise TrainingFailed(f"the generator's samples for {path.name} became non-finite")
    atomic_write(path, lambda tmp: save_image(images, tmp, format="png", nrow=5, normalize=True, value_range=(-1, 1)))


# ----------------------------------------------------------------------------- the loop


def train(config: Config, command: str | None = None) -> dict:
    """Train (or, with --resume, continue) a GAN into config.out; returns a summary of what was written."""
    config = config.validated()
    out, size = Path(config.out), config.batch_size
    with GanRun(config, command) as run:  # refuses what cannot run, then holds --out (gan_run.py)
        device = run.device
        images = load_mnist(config.data_dir, train=True, download=config.download)[0]  # (N, 1, 28, 28) in [-1, 1]
        if size > len(images):
            raise UserError(f"--batch_size {size} is larger than the training set ({len(images)} images)")
        images = images.to(device)  # a batch is one gather from the whole set: no DataLoader

        torch.manual_seed(config.seed)
        generator = Generator(config.latent_dim).to(device)
        discriminator = Discriminator(config.d_dropout).to(device)
        average = WeightAverage(generator, config.ema, config.seed)
        opt_g, opt_d = adam(generator, config.lr, device), adam(discriminator, config.lr, device)
        autocast = run.choose_precision(generator, discriminator)  # bf16 autocast or float32
        shuffle = torch.Generator().manual_seed(config.seed)  # its own stream: shuffling never shifts the noise
        fixed_noise = torch.randn(25, config.latent_dim, generator=torch.Generator().manual_seed(config.seed + 1))

        iters_per_epoch = len(images) // size  # the last partial batch of each shuffle is dropped
        total = config.n_epochs * iters_per_epoch
        half = max(total // 2, 1)
        at = run.start(generator, discriminator, average.model, opt_g, opt_d, shuffle, fixed_noise,
                       len(images), iters_per_epoch, total, half)  # on --resume: the checkpoint's state and place
        fixed_noise, iteration = at.fixed_noise.to(device), at.iteration
        if iteration == 0:
            sampler = average.sampler()
            for path in (out / "grid_start.png", out / "grids" / "iter_0000000.png"):
                save_grid(sampler, fixed_noise, path)
            run.save_generator(sampler, "start")

        for epoch in range(at.epoch, config.n_epochs):
            run.new_epoch(shuffle)  # the order's random state, for a checkpoint in mid-epoch
            order = torch.randperm(len(images), generator=shuffle).to(device)
            for b in range(at.batch if epoch == at.epoch else 0, iters_per_epoch):
                real = images[order[b * size:(b + 1) * size]]  # (B, 1, 28, 28)
                for group in (*opt_g.param_groups, *opt_d.param_groups):
                    group["lr"] = lr_at(config.lr, config.lr_decay, iteration, total)
                stats = train_step(generator, discriminator, opt_g, opt_d, real, autocast, 1 - config.label_smoothing)
                average.update(first=iteration == 0)
                iteration += 1
                run.log(iteration, epoch, stats)  # losses.csv; stops a run whose loss is not finite
                if iteration % config.save_interval == 0:
                    save_grid(average.sampler(), fixed_noise, out / "grids" / f"iter_{iteration:07d}.png")
                if iteration == half:
                    sampler = average.sampler()
                    save_grid(sampler, fixed_noise, out / "grid_half.png")
                    run.save_generator(sampler, "half")
                run.stop_if_asked(epoch, b + 1)  # a stop signal: checkpoint, then exit 128 + signal
            run.end_epoch(epoch + 1)  # checkpoint

        sampler = average.sampler()
        save_grid(sampler, fixed_noise, out / "grid_end.png")
        run.save_generator(sampler, "end")
        return run.finish()


# ----------------------------------------------------------------------------- the command line


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line -> Config (the defaults come from Config itself)."""
    d = Config()
    p = OneLineParser(prog="my_gan.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n_epochs", type=int, default=d.n_epochs,
                   help="epochs to train (may be raised on --resume, which stretches the --lr_decay schedule)")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="images per update")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of both networks")
    p.add_argument("--latent_dim", type=int, default=d.latent_dim, help="dimension of the noise z")
    p.add_argument("--save_interval", type=int, default=d.save_interval, help="save a sample grid every N iterations")
    p.add_argument("--data_dir", default=d.data_dir, help="MNIST root (holds MNIST/raw/); downloaded there if missing")
    # "%(default).0s" prints nothing; it only stops the formatter from adding "(default: True)".
    p.add_argument("--no_download", dest="download", action="store_false",
                   help="never try to download MNIST (default: download when missing)%(default).0s")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of weights, noise, shuffling and the grids' noise")
    p.add_argument("--d_dropout", type=float, default=d.d_dropout, help="dropout after D's hidden layers (0: none)")
    p.add_argument("--label_smoothing", type=float, default=d.label_smoothing,
                   help="one-sided: D's target for real images is 1 minus this (0: none)")
    p.add_argument("--ema", type=float, default=d.ema,
                   help="decay of the moving average of G's weights used for samples and saved generators (0: off)")
    p.add_argument("--lr_decay", default=d.lr_decay, choices=["none", "linear"],
                   help="linear: --lr for the first half of training, then linearly down to 0 at the end")
    p.add_argument("--out", default=d.out, help="output folder of the run")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds an earlier run, deleting that run's outputs "
                        "(needed to write into the committed part2/results)")
    p.add_argument("--device", default=d.device, help="where to train: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default=d.precision, choices=["auto", "bf16", "fp32"],
                   help="bf16 autocast (float32 master weights) or plain float32; auto times both at start-up "
                        "and keeps bf16 only if clearly faster here (a seeded run repeats exactly with a fixed choice)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads; 0: as many as cores are idle, looked at again every 5 s, since torch's "
                        "threads spin-wait for each other and a core taken by another job slows every operation "
                        "(a seeded run repeats exactly only with a fixed --threads)")
    p.add_argument("--eval_scores", action="store_true",
                   help="after training, score the start/half/end generators (evaluate.py's score_run)")
    args = p.parse_args(argv)
    return Config(**{f.name: getattr(args, f.name) for f in fields(Config)})


def main(argv: list[str] | None = None) -> None:
    """One line on stderr and exit 2 for bad input, 1 on divergence, 128 + signal after Ctrl-C or SIGTERM."""
    config = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else ["my_gan.py", *argv])
    run_cli("my_gan.py", lambda: train(config, command))


if __name__ == "__main__":
    main()

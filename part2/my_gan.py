"""Train the fully connected GAN on MNIST: fast, resumable, with 5x5 sample grids.

    cd part2 && python my_gan.py --n_epochs 200
    python part2/my_gan.py --n_epochs 1 --data_dir ../shared/mnist --out /tmp/gan1

Everything a run makes goes under --out (see README / the issue for the folder contract):
config.json, checkpoint.pt, grids/iter_*.png, grid_{start,half,end}.png,
generator_{start,half,end}.pt, losses.csv, losses.png.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import importlib.util
import math
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError, atomic_save, atomic_write, pick_device, safe_load, set_seed, write_json
from models import Discriminator, Generator, save_generator
from sampling import generate

HERE = Path(__file__).resolve().parent

PROG = "my_gan.py"
LOG_EVERY = 50  # iterations averaged into one row of losses.csv (and one progress-bar update of the losses)
N_SAMPLES = 25  # the 5x5 grid
CSV_HEADER = ["iteration", "epoch", "loss_d", "loss_g", "d_real", "d_fake"]
# A resumed run must train the same problem; --n_epochs, --save_interval, --device, --out may change.
RESUME_MUST_MATCH = ("latent_dim", "batch_size", "lr", "precision", "d_dropout", "label_smoothing", "ema", "lr_decay")
BN_REFRESH_BATCHES, BN_REFRESH_SIZE = 4, 512  # latents that set the averaged generator's BatchNorm statistics


class TrainingInterrupted(Exception):
    """Ctrl-C during training: the checkpoint has been saved; the CLI exits 130."""


class TrainingDiverged(Exception):
    """A loss became NaN or inf; the last good checkpoint is kept; the CLI exits 1."""


@dataclass
class Config:
    """Everything that defines a run; defaults are the course template's, plus the four stabilisers below.

    d_dropout, label_smoothing, ema and lr_decay are what report.md's GAN section measured;
    0, 0, 0, "none" is the plain template recipe.
    """

    n_epochs: int = 200
    batch_size: int = 64
    lr: float = 0.0002
    latent_dim: int = 100
    save_interval: int = 500
    data_dir: str = str(HERE / "data")
    out: str = str(HERE / "runs" / "gan")
    seed: int = 0
    device: str = "auto"
    precision: str = "bf16"
    d_dropout: float = 0.1  # Dropout after each hidden layer of D (0.3 and 0.2 scored lower; report.md)
    label_smoothing: float = 0.1  # D's target for real images is 1 - this (one-sided: fakes stay 0)
    ema: float = 0.999  # decay of the weight average of G that grids and saved generators use; 0: off
    lr_decay: str = "linear"  # constant for the first half, then down to 0 at the last iteration; "none": constant
    threads: int = 0  # 0: torch's default (one per core)
    resume: bool = False
    eval_scores: bool = False
    download: bool = True

    def validate(self) -> None:
        """Refuse impossible values before any data or model is touched."""
        for name in ("n_epochs", "batch_size", "latent_dim", "save_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"--{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise UserError(f"--threads must be 0 (torch's default) or a positive integer, got {self.threads!r}")
        for name in ("d_dropout", "label_smoothing", "ema"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise UserError(f"--{name} must be in [0, 1), got {value!r}")
        if self.lr_decay not in ("none", "linear"):
            raise UserError(f"--lr_decay must be none or linear, got {self.lr_decay!r}")
        if self.precision not in ("bf16", "fp32"):
            raise UserError(f"--precision must be bf16 or fp32, got {self.precision!r}")
        if self.eval_scores and importlib.util.find_spec("evaluate") is None:
            # Checked now rather than after hours of training.
            raise UserError("--eval_scores: part2/evaluate.py (score_run) is not available")


# ----------------------------------------------------------------------------- the update


def train_step(generator: Generator, discriminator: Discriminator, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, real: torch.Tensor, autocast: Callable[[], Any],
               real_label: float = 1.0, mark: Callable[[str], None] = lambda phase: None) -> torch.Tensor:
    """One update of D, then one of G, on a batch of real images (B, 1, 28, 28).

    real_label < 1 is one-sided label smoothing: D is asked for that probability on real images,
    so it gains nothing from ever more confident logits (fakes keep target 0, and G's target stays 1).

    Returns the detached tensor [loss_d, loss_g, d_real, d_fake] (no host sync, so the loop
    never waits on the device). One generator forward serves both updates: D sees it detached,
    then G backpropagates through the same graph (G's weights have not changed in between).
    mark(phase) is called as each phase ends (bench_gan.py times them; a no-op otherwise).
    """
    b = real.shape[0]
    z = torch.randn(b, generator.latent_dim, device=real.device)  # (B, latent)
    with autocast():
        fake = generator(z)  # (B, 1, 28, 28)
        mark("G forward")
        # D has no BatchNorm, so real and fake can share one forward (one larger matmul per layer).
        logits = discriminator(torch.cat([real.to(fake.dtype), fake.detach()])).float()  # (2B,)
    target = torch.cat([torch.full((b,), real_label, device=real.device), torch.zeros(b, device=real.device)])
    # Mean over 2B = (loss on real + loss on fake) / 2, the template's discriminator loss.
    loss_d = F.binary_cross_entropy_with_logits(logits, target)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    mark("D step: D forward and backward")
    opt_d.step()
    mark("Adam D")

    # D's weight gradients in the G step would be thrown away (zeroed before D's next update): skip them.
    discriminator.requires_grad_(False)
    with autocast():  # a new autocast region: the bf16 copies of D's weights must be the updated ones
        logits_gen = discriminator(fake).float()  # (B,)
    # Non-saturating generator loss: minimise -log D(G(z)) instead of the minimax log(1 - D(G(z))).
    # Both have the same fixed point, but early on, when D rejects fakes easily, log(1 - D) is flat
    # and gives G almost no gradient, while -log D gives a strong one (Goodfellow et al., 2014).
    loss_g = F.binary_cross_entropy_with_logits(logits_gen, torch.ones(b, device=real.device))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    mark("G step: D forward, backward through D and G")
    opt_g.step()
    mark("Adam G")
    discriminator.requires_grad_(True)

    with torch.no_grad():
        probs = torch.sigmoid(logits)
        return torch.stack([loss_d.detach(), loss_g.detach(), probs[:b].mean(), probs[b:].mean()])


def make_optimizers(generator: Generator, discriminator: Discriminator,
                    lr: float, device: torch.device) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam(betas=(0.5, 0.999)); the fused kernel where the device has one (one kernel, not one per tensor)."""
    fused = device.type in ("cpu", "cuda")  # mps has a fused Adam only in recent releases
    kw = dict(lr=lr, betas=(0.5, 0.999), fused=True) if fused else dict(lr=lr, betas=(0.5, 0.999))
    return torch.optim.Adam(generator.parameters(), **kw), torch.optim.Adam(discriminator.parameters(), **kw)


def lr_at(config: Config, iteration: int, total_iters: int) -> float:
    """Learning rate of both networks for the update after `iteration` updates (--lr_decay)."""
    if config.lr_decay == "none":
        return config.lr
    # Constant for the first half, then linearly down to zero (as in CycleGAN): small late steps
    # let both networks settle instead of chasing each other at full step size.
    return config.lr * min(1.0, 2.0 * (1.0 - iteration / total_iters))


def build_models(config: Config, device: torch.device) -> tuple[Generator, Discriminator, Generator | None]:
    """G, D (with --d_dropout) and the weight average of G (None without --ema), on the device.

    Created in this order from the current RNG state, so a seeded run is the same wherever it is built.
    """
    generator = Generator(config.latent_dim).to(device)
    discriminator = Discriminator(config.d_dropout).to(device)
    return generator, discriminator, make_ema(generator, config.ema)


def make_ema(generator: Generator, decay: float) -> Generator | None:
    """A copy of G to hold the exponential moving average of its weights (None when decay is 0).

    G's weights wander around a good solution as D keeps moving; their average lands nearer its
    centre, which gives sharper, more varied samples (Yazici et al., 2019). Only parameters are
    averaged (update_ema): the BatchNorm statistics are recomputed for the averaged weights
    (refresh_bn_stats).
    """
    return None if decay == 0 else copy.deepcopy(generator).requires_grad_(False)


@torch.no_grad()
def update_ema(ema: Generator, generator: Generator, decay: float, first: bool) -> None:
    """ema <- decay * ema + (1 - decay) * G, parameter by parameter; the first update copies G.

    The same arithmetic as torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn, at a
    quarter of its cost per call here (a test checks they agree bit for bit).
    """
    for avg, live in zip(ema.parameters(), generator.parameters()):
        if first:
            avg.copy_(live)
        else:
            avg.lerp_(live, 1 - decay)


@torch.no_grad()
def refresh_bn_stats(generator: Generator, seed: int = 0) -> Generator:
    """Set G's BatchNorm running statistics from its own activations on fixed latents; returns G in eval mode.

    Statistics kept during training belong to the live weights, not to an average of them.
    The latents come from their own seeded generator, so training's random stream is untouched.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm1d)]
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    momenta = [m.momentum for m in norms]
    generator.train()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    for _ in range(BN_REFRESH_BATCHES):
        generator(torch.randn(BN_REFRESH_SIZE, generator.latent_dim, generator=gen).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return generator.eval()


def resolve_precision(precision: str, device: torch.device) -> tuple[str, Callable[[], Any]]:
    """(precision actually used, factory of the autocast context) for this device."""
    if precision == "bf16":
        if device.type == "mps":
            print(f"{PROG}: note: bf16 autocast is not used on mps; training in fp32")
            precision = "fp32"
        elif device.type == "cuda" and not torch.cuda.is_bf16_supported():
            print(f"{PROG}: note: this GPU has no bf16; training in fp32")
            precision = "fp32"
    if precision == "fp32":
        return "fp32", contextlib.nullcontext
    # Master weights and optimiser state stay float32; only matmuls and activations run in bf16.
    return "bf16", lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------- outputs


def save_grid(generator: Generator, fixed_noise: torch.Tensor, path: Path) -> None:
    """5x5 grid from the fixed noise, generator in eval mode (BatchNorm running stats), fp32."""
    from torchvision.utils import save_image  # torchvision's import is slow; only needed here

    images = generate(generator, fixed_noise)  # (25, 1, 28, 28), eval mode, mode restored
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=5, normalize=True, value_range=(-1, 1))


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """Loss curves and mean D outputs from losses.csv, written atomically."""
    # A bare Figure needs no pyplot backend: no display, and no backend switched under a notebook.
    from matplotlib.figure import Figure

    rows = read_csv_rows(csv_path)
    if not rows:
        return
    it = [int(r["iteration"]) for r in rows]
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(it, [float(r["loss_d"]) for r in rows], label="D loss")
    ax1.plot(it, [float(r["loss_g"]) for r in rows], label="G loss (non-saturating)")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel(f"BCE (mean over {LOG_EVERY} iterations)")
    ax1.legend()
    ax2.plot(it, [float(r["d_real"]) for r in rows], label="D(x)")
    ax2.plot(it, [float(r["d_fake"]) for r in rows], label="D(G(z))")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("mean sigmoid output")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of losses.csv as dicts (empty when the file is missing)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def truncate_csv(path: Path, last_iteration: int) -> None:
    """Drop rows logged after the checkpoint (a run killed mid-epoch logged beyond it)."""
    rows = [r for r in read_csv_rows(path) if int(r["iteration"]) <= last_iteration]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_HEADER)
        writer.writeheader()
        writer.writerows(rows)


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag that the loop checks between updates.

    An exception raised inside an update could leave D updated and G not; stopping between
    updates makes the saved checkpoint exact. A second Ctrl-C interrupts at once.
    """
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C behaves as usual
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- training


def get_rng_state(shuffle_state: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """RNG states as tensors, so the checkpoint loads with weights_only=True."""
    rng = {"torch": torch.get_rng_state(), "shuffle": shuffle_state}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        rng["mps"] = torch.mps.get_rng_state()
    return rng


def set_rng_state(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore the noise RNGs (the shuffle generator is restored by the caller)."""
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    elif device.type == "mps" and "mps" in rng:
        torch.mps.set_rng_state(rng["mps"])


def load_checkpoint(config: Config) -> dict[str, Any]:
    """checkpoint.pt of --out, checked against the config; one-line errors otherwise."""
    path = Path(config.out) / "checkpoint.pt"
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint at {path} (run without --resume to start)")
    ckpt = safe_load(path, "--resume: checkpoint")
    missing = [k for k in ("generator", "discriminator", "opt_g", "opt_d", "epoch", "iteration",
                           "rng", "config", "fixed_noise") if k not in ckpt]
    if missing:
        raise UserError(f"--resume: {path} is not a checkpoint of {PROG} (missing {', '.join(missing)})")
    saved = ckpt["config"]
    for name in RESUME_MUST_MATCH:
        if saved.get(name) != getattr(config, name):
            raise UserError(f"--resume: the checkpoint was made with --{name} {saved.get(name)}, "
                            f"not {getattr(config, name)}; pass the same value or use another --out")
    if ckpt["epoch"] >= config.n_epochs:
        raise UserError(f"--resume: the checkpoint has already completed {ckpt['epoch']} epochs; "
                        f"raise --n_epochs above {ckpt['epoch']} to continue")
    return ckpt


def train(config: Config, command: str | None = None) -> dict[str, Any]:
    """Train (or resume) a GAN run into config.out; return a summary with the output paths.

    Raises UserError for bad input, TrainingInterrupted after Ctrl-C (checkpoint saved),
    TrainingDiverged when a loss becomes non-finite (last good checkpoint kept).
    """
    config.validate()
    device = pick_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    ckpt = load_checkpoint(config) if config.resume else None

    from mnist_data import load_mnist  # torchvision import; after the cheap checks

    images, _ = load_mnist(config.data_dir, train=True, download=config.download)  # (N, 1, 28, 28) in [-1, 1]
    n_train = images.shape[0]
    if config.batch_size > n_train:
        raise UserError(f"--batch_size {config.batch_size} is larger than the training set ({n_train} images)")
    # The whole set lives on the device (188 MB as float32): a batch is one gather, no DataLoader.
    images = images.to(device)
    # The last partial batch is dropped (like drop_last=True): every update sees batch_size images,
    # and each epoch's shuffle puts different images in the dropped tail.
    iters_per_epoch = n_train // config.batch_size
    total_iters = config.n_epochs * iters_per_epoch
    half_iter = total_iters // 2

    set_seed(config.seed)
    generator, discriminator, ema = build_models(config, device)
    opt_g, opt_d = make_optimizers(generator, discriminator, config.lr, device)
    precision, autocast = resolve_precision(config.precision, device)
    shuffle_gen = torch.Generator().manual_seed(config.seed)  # its own stream: shuffling never shifts the noise
    # Drawn once from its own seeded generator, so every grid of a run shows the same 25 latents.
    fixed_noise = torch.randn(N_SAMPLES, config.latent_dim, generator=torch.Generator().manual_seed(config.seed + 1))

    start_epoch, skip_batches, iteration = 0, 0, 0
    if ckpt is not None:
        generator.load_state_dict(ckpt["generator"])
        discriminator.load_state_dict(ckpt["discriminator"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        if ema is not None:
            ema.load_state_dict(ckpt["generator_ema"])
        fixed_noise = ckpt["fixed_noise"]
        start_epoch, iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        skip_batches = int(ckpt.get("batch_in_epoch", 0))
        shuffle_gen.set_state(ckpt["rng"]["shuffle"])
        set_rng_state(ckpt["rng"], device)
        if iteration > half_iter and ckpt["config"].get("n_epochs") != config.n_epochs:
            print(f"{PROG}: note: the new halfway point (iteration {half_iter}) has already passed; "
                  f"grid_half.png stays the one of the earlier schedule")
    fixed_noise = fixed_noise.to(device)

    out.mkdir(parents=True, exist_ok=True)
    grids = out / "grids"
    csv_path = out / "losses.csv"
    ckpt_path = out / "checkpoint.pt"
    if ckpt is None:
        for old in grids.glob("iter_*.png"):  # grids of an earlier run in this folder would mix with ours
            old.unlink()
        truncate_csv(csv_path, -1)
    else:
        truncate_csv(csv_path, iteration)
    record = {**asdict(config), "precision_used": precision, "device_used": str(device),
              "n_train": n_train, "iterations_per_epoch": iters_per_epoch,
              "command": command, "resumed_at_iteration": iteration}
    write_json(record, out / "config.json")

    def sampler() -> Generator:
        """The generator that grids and saved files show: the weight average when --ema is on."""
        return generator if ema is None else refresh_bn_stats(ema, config.seed)

    def snapshot(tag: str) -> None:
        g = sampler()
        save_grid(g, fixed_noise, out / f"grid_{tag}.png")
        save_generator(g, out / f"generator_{tag}.pt")

    def save_checkpoint(epoch: int, batch_in_epoch: int, shuffle_state: torch.Tensor) -> None:
        atomic_save({
            "generator": generator.state_dict(), "discriminator": discriminator.state_dict(),
            **({} if ema is None else {"generator_ema": ema.state_dict()}),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "epoch": epoch,  # completed epochs
            "batch_in_epoch": batch_in_epoch,  # updates done in epoch `epoch` (0 at an epoch boundary)
            "iteration": iteration, "rng": get_rng_state(shuffle_state, device),
            "config": asdict(config), "fixed_noise": fixed_noise.cpu(),
        }, ckpt_path)

    window: list[torch.Tensor] = []

    def flush(epoch: int) -> None:
        """Average the window into one CSV row; stop on a non-finite loss (one host sync per call)."""
        if not window:
            return
        stats = torch.stack(window).float().mean(0).tolist()
        window.clear()
        if not all(math.isfinite(v) for v in stats[:2]):
            raise TrainingDiverged(
                f"loss became non-finite (loss_d={stats[0]}, loss_g={stats[1]}) by iteration {iteration} "
                f"(epoch {epoch + 1}); stopped. {ckpt_path} keeps the last good state "
                f"(try a lower --lr or --precision fp32)")
        with open(csv_path, "a", newline="") as f:
            csv.writer(f).writerow([iteration, epoch + 1] + [f"{v:.6f}" for v in stats])
        bar.set_postfix(loss_d=f"{stats[0]:.3f}", loss_g=f"{stats[1]:.3f}",
                        d_real=f"{stats[2]:.2f}", d_fake=f"{stats[3]:.2f}", refresh=False)

    print(f"{PROG}: {device} {precision}, {n_train} images, {iters_per_epoch} iterations/epoch of "
          f"{config.batch_size} (last {n_train % config.batch_size} images of each shuffle dropped), "
          f"{'resuming at iteration ' + str(iteration) if ckpt else 'new run'} -> {out}")
    if ckpt is None:
        save_grid(sampler(), fixed_noise, grids / f"iter_{0:07d}.png")
        snapshot("start")
        if half_iter == 0:
            snapshot("half")

    from tqdm import tqdm

    real_label = 1.0 - config.label_smoothing
    generator.train()
    discriminator.train()
    t0 = time.perf_counter()
    start_iteration = iteration
    bar = tqdm(total=total_iters, initial=iteration, unit="it", dynamic_ncols=True, mininterval=0.5)
    try:
        with stop_on_sigint() as flag:
            for epoch in range(start_epoch, config.n_epochs):
                shuffle_state = shuffle_gen.get_state()  # saved: a resume redraws this epoch's order
                perm = torch.randperm(n_train, generator=shuffle_gen).to(device)
                for b in range(skip_batches, iters_per_epoch):
                    real = images[perm[b * config.batch_size:(b + 1) * config.batch_size]]  # (B, 1, 28, 28)
                    if config.lr_decay != "none":
                        lr = lr_at(config, iteration, total_iters)
                        for group in (*opt_g.param_groups, *opt_d.param_groups):
                            group["lr"] = lr
                    window.append(train_step(generator, discriminator, opt_g, opt_d, real, autocast, real_label))
                    if ema is not None:
                        update_ema(ema, generator, config.ema, first=iteration == 0)
                    iteration += 1
                    bar.update(1)
                    if iteration % LOG_EVERY == 0:
                        flush(epoch)
                    if iteration % config.save_interval == 0:
                        save_grid(sampler(), fixed_noise, grids / f"iter_{iteration:07d}.png")
                    if iteration == half_iter:
                        snapshot("half")
                    if flag["stop"] and b + 1 < iters_per_epoch:
                        flush(epoch)  # refuses to save a diverged state
                        save_checkpoint(epoch, b + 1, shuffle_state)
                        plot_losses(csv_path, out / "losses.png")
                        raise TrainingInterrupted(
                            f"interrupted at iteration {iteration} (epoch {epoch + 1}); checkpoint saved to "
                            f"{ckpt_path}; continue with the same flags plus --resume")
                skip_batches = 0
                flush(epoch)
                save_checkpoint(epoch + 1, 0, shuffle_gen.get_state())
                if flag["stop"] and epoch + 1 < config.n_epochs:
                    plot_losses(csv_path, out / "losses.png")
                    raise TrainingInterrupted(
                        f"interrupted at iteration {iteration} (end of epoch {epoch + 1}); checkpoint saved "
                        f"to {ckpt_path}; continue with the same flags plus --resume")
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    snapshot("end")
    plot_losses(csv_path, out / "losses.png")
    done = iteration - start_iteration
    print(f"{PROG}: {done} iterations in {seconds:.1f} s ({1000 * seconds / max(done, 1):.2f} ms/iteration); "
          f"outputs in {out}")
    summary: dict[str, Any] = {
        "out": out, "iterations": iteration, "epochs": config.n_epochs, "seconds": seconds,
        "device": str(device), "precision": precision, "checkpoint": ckpt_path,
        "grids": {t: out / f"grid_{t}.png" for t in ("start", "half", "end")},
        "generators": {t: out / f"generator_{t}.pt" for t in ("start", "half", "end")},
        "losses_csv": csv_path, "losses_png": out / "losses.png",
    }
    if config.eval_scores:
        from evaluate import score_run  # another engineer's module; imported only when asked for

        summary["scores"] = score_run(out, data_dir=config.data_dir, device=device)
    return summary


class _OneLineParser(argparse.ArgumentParser):
    """argparse errors as one line (no usage block), like every other error of this script."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line -> Config (the defaults come from Config itself)."""
    d = Config()
    p = _OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n_epochs", type=int, default=d.n_epochs, help="epochs to train (may be raised on --resume, which stretches the --lr_decay schedule)")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="images per update")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of both networks")
    p.add_argument("--latent_dim", type=int, default=d.latent_dim, help="dimension of the noise z")
    p.add_argument("--save_interval", type=int, default=d.save_interval, help="save a sample grid every N iterations")
    p.add_argument("--data_dir", default=d.data_dir, help="MNIST root (holds MNIST/raw/); downloaded there if missing")
    # "%(default).0s" prints nothing; it only stops the formatter from adding "(default: True)".
    p.add_argument("--no_download", dest="download", action="store_false",
                   help="never try to download MNIST (default: download when missing)%(default).0s")
    p.add_argument("--out", default=d.out, help="output folder of the run")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of weights, noise, shuffling and the fixed grid noise")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda", "mps"], help="where to train")
    p.add_argument("--precision", default=d.precision, choices=["bf16", "fp32"],
                   help="bf16 autocast (float32 master weights) or plain float32")
    p.add_argument("--d_dropout", type=float, default=d.d_dropout, help="dropout after D's hidden layers (0: none)")
    p.add_argument("--label_smoothing", type=float, default=d.label_smoothing,
                   help="one-sided: D's target for real images is 1 minus this (0: none)")
    p.add_argument("--ema", type=float, default=d.ema,
                   help="decay of the moving average of G's weights used for samples and saved generators (0: off)")
    p.add_argument("--lr_decay", default=d.lr_decay, choices=["none", "linear"],
                   help="linear: --lr for the first half of training, then linearly down to 0 at the end")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads (0: torch's default); on a machine busy with other jobs, 1 can be several "
                        "times faster, since OpenMP threads spin-wait for a descheduled partner")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--eval_scores", action="store_true",
                   help="after training, score the start/half/end generators (evaluate.score_run)")
    args = p.parse_args(argv)
    return Config(**{f.name: getattr(args, f.name) for f in fields(Config)})


def main(argv: list[str] | None = None) -> None:
    """CLI entry: one line on stderr and exit 2 for bad input, 130 after Ctrl-C, 1 on divergence."""
    config = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join([PROG, *argv])
    try:
        train(config, command)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(130)
    except TrainingDiverged as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        print(f"{PROG}: interrupted; {Path(config.out) / 'checkpoint.pt'} holds the last end of epoch, if any",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

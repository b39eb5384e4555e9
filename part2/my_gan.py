"""Train the fully connected GAN on MNIST: fast, resumable, with 5x5 sample grids.

    cd part2 && python my_gan.py --n_epochs 200
    python part2/my_gan.py --n_epochs 1 --data_dir ../shared/mnist --out /tmp/gan1
    python part2/my_gan.py --n_epochs 200 --resume        # continue the stopped run in the same --out

This file holds the config, the update (train_step) and the loop; run_folder.py writes what a run
makes under --out: config.json, checkpoint.pt, grids/iter_*.png, grid_{start,half,end}.png,
generator_{start,half,end}.pt, losses.csv and losses.png. A folder that already holds a run is
continued with --resume or started afresh with --overwrite, never silently replaced.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import (
    TORCH_THREADS,
    OneLineParser,
    ThreadGovernor,
    UserError,
    all_finite,
    check_fits,
    check_resume_or_overwrite,
    check_seed,
    check_threads,
    keep_freed_memory,
    pick_device,
    run_cli,
    set_seed,
    set_threads,
    stop_on_sigint,
)
from models import Discriminator, Generator, parameter_count
from pick_precision import autocast_factory, choose_precision
from run_folder import (
    LOG_EVERY,
    RunFolder,
    TrainingDiverged,
    TrainingInterrupted,
    get_rng_state,
    set_rng_state,
    tensors_in,
)

HERE = Path(__file__).resolve().parent

PROG = "my_gan.py"
N_SAMPLES = 25  # the 5x5 grid
# A resumed run must train the same problem on the same data: --resume refuses other values of these.
RESUME_MUST_MATCH = ("latent_dim", "batch_size", "lr", "precision", "d_dropout", "label_smoothing", "ema", "lr_decay",
                     "seed", "data_dir")
# These may change on --resume; the new values are used and recorded in config.json and the checkpoint.
# Raising n_epochs stretches the --lr_decay schedule; threads and device may change float rounding.
RESUME_HONOURED = ("n_epochs", "save_interval", "out", "device", "threads", "download", "eval_scores", "resume",
                   "overwrite")
BN_REFRESH_BATCHES, BN_REFRESH_SIZE = 4, 512  # latents that set the averaged generator's BatchNorm statistics


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
    precision: str = "auto"  # bf16 or fp32; auto: the faster here (pick_precision.py)
    d_dropout: float = 0.1  # Dropout after each hidden layer of D (0.3 and 0.2 scored lower; report.md)
    label_smoothing: float = 0.1  # D's target for real images is 1 - this (one-sided: fakes stay 0)
    ema: float = 0.999  # decay of the weight average of G that grids and saved generators use; 0: off
    lr_decay: str = "linear"  # constant for the first half, then down to 0 at the last iteration; "none": constant
    threads: int = 0  # 0: the cores idle at start-up, then every 5 s (cs324_utils.ThreadGovernor)
    resume: bool = False  # continue the run in `out` from its checkpoint
    overwrite: bool = False  # start afresh in an `out` that holds an earlier run, deleting its outputs
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
        check_seed(self.seed)
        check_threads(self.threads)
        for name in ("d_dropout", "label_smoothing", "ema"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise UserError(f"--{name} must be in [0, 1), got {value!r}")
        if self.lr_decay not in ("none", "linear"):
            raise UserError(f"--lr_decay must be none or linear, got {self.lr_decay!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"--precision must be auto, bf16 or fp32, got {self.precision!r}")
        check_resume_or_overwrite(self.resume, self.overwrite)


# ----------------------------------------------------------------------------- the update


def train_step(generator: Generator, discriminator: Discriminator, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, real: torch.Tensor, autocast: Callable[[], Any],
               real_label: float = 1.0) -> torch.Tensor:
    """One update of D, then one of G, on a batch of real images (B, 1, 28, 28).

    real_label < 1 is one-sided label smoothing: D is asked for that probability on real images,
    so it gains nothing from ever more confident logits (fakes keep target 0, and G's target stays 1).

    Returns the detached tensor [loss_d, loss_g, d_real, d_fake] (no host sync, so the loop
    never waits on the device). One generator forward serves both updates: D sees it detached,
    then G backpropagates through the same graph (G's weights have not changed in between).
    """
    b = real.shape[0]
    z = torch.randn(b, generator.latent_dim, device=real.device)  # (B, latent)
    with autocast():
        fake = generator(z)  # (B, 1, 28, 28)
        # D has no BatchNorm, so real and fake can share one forward (one larger matmul per layer).
        logits = discriminator(torch.cat([real.to(fake.dtype), fake.detach()])).float()  # (2B,)
    target = torch.cat([torch.full((b,), real_label, device=real.device), torch.zeros(b, device=real.device)])
    # Mean over 2B = (loss on real + loss on fake) / 2, the template's discriminator loss.
    loss_d = F.binary_cross_entropy_with_logits(logits, target)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

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
    opt_g.step()
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
    """ema <- decay * ema + (1 - decay) * G for every parameter, in one call; the first update copies G.

    The same arithmetic as torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn (a test
    checks they agree bit for bit), without its per-parameter Python loop.
    """
    averages, live = list(ema.parameters()), list(generator.parameters())
    if first:
        torch._foreach_copy_(averages, live)
    else:
        torch._foreach_lerp_(averages, live, 1 - decay)  # lerp_ per tensor, in one call


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


def resolve_precision(precision: str, device: torch.device, generator: Generator, discriminator: Discriminator,
                      batch_size: int) -> tuple[str, str]:
    """(bf16 or fp32, why) for --precision on this device; auto times both on copies of G and D on a CPU.

    bf16 autocast keeps master weights and optimiser state in float32; only matmuls and
    activations run in bf16. It is not used on mps, nor on a GPU without bf16.
    """
    if device.type == "mps" and precision != "fp32":
        return "fp32", "bf16 autocast is not used on mps"
    if device.type == "cuda" and precision != "fp32" and not torch.cuda.is_bf16_supported():
        return "fp32", "this GPU has no bf16"
    if precision != "auto":
        return precision, "--precision"
    if device.type != "cpu":  # these small layers are launch-bound on a GPU: bf16 would only add casts
        return "fp32", "auto on a GPU"
    return choose_precision(generator, discriminator, batch_size, device)


# ----------------------------------------------------------------------------- a run in progress


@dataclass
class Run:
    """A run in progress: what setup_run builds and train_epoch advances."""

    config: Config
    device: torch.device
    folder: RunFolder
    images: torch.Tensor  # (N, 1, 28, 28) in [-1, 1], on the device
    generator: Generator
    discriminator: Discriminator
    ema: Generator | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    autocast: Callable[[], Any]
    shuffle_gen: torch.Generator  # its own stream: shuffling never shifts the noise
    fixed_noise: torch.Tensor  # (25, latent_dim): every grid of a run shows these latents
    scorer: Callable[..., dict] | None = None  # evaluate.score_run with --eval_scores
    start_epoch: int = 0
    skip_batches: int = 0  # updates already done in start_epoch (a resume from mid-epoch)
    iteration: int = 0  # updates done
    window: list[torch.Tensor] = field(default_factory=list)  # train_step's stats since the last CSV row
    bar: Any = None  # the progress bar while the loop runs
    precision_why: str = ""  # how the precision was chosen (--precision auto times both)
    governor: ThreadGovernor | None = None  # --threads 0 on a CPU: threads follow the idle cores

    @property
    def n_train(self) -> int:
        return self.images.shape[0]

    @property
    def iters_per_epoch(self) -> int:
        # The last partial batch is dropped (like drop_last=True): every update sees batch_size images,
        # and each epoch's shuffle puts different images in the dropped tail.
        return self.n_train // self.config.batch_size

    @property
    def total_iters(self) -> int:
        return self.config.n_epochs * self.iters_per_epoch

    @property
    def half_iter(self) -> int:
        return self.total_iters // 2

    def sampler(self) -> Generator:
        """The generator that grids and saved files show: the weight average when --ema is on."""
        return self.generator if self.ema is None else refresh_bn_stats(self.ema, self.config.seed)

    def diverged(self, what: str) -> TrainingDiverged:
        epoch = max(self.iteration - 1, 0) // self.iters_per_epoch
        return self.folder.diverged(what, self.iteration, epoch)


def check_memory(config: Config, device: torch.device) -> None:
    """Refuse a --latent_dim or --batch_size whose models or activations cannot fit (rough upper estimates)."""
    n_g, n_d = parameter_count(config.latent_dim)
    # float32 weights, gradients and two Adam moments of both networks, plus G's average and its bf16 copy.
    models = 4 * (6 * n_g + 4 * n_d)
    # Per image: z, G's and D's activations (D sees 2B images, then B again) and their gradients.
    per_image = 4 * 2 * (config.latent_dim + 20_000)
    batch = max(config.batch_size, BN_REFRESH_SIZE)
    check_fits(models, f"--latent_dim {config.latent_dim}", device)
    check_fits(models + batch * per_image, f"--batch_size {config.batch_size} with --latent_dim {config.latent_dim}", device)


def load_scorer() -> Callable[..., dict]:
    """score_run of part2/evaluate.py, imported by its path: no other module named evaluate can stand in."""
    path = HERE / "evaluate.py"
    name = "part2_evaluate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise UserError(f"--eval_scores: {path} (score_run) is not available")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name].score_run


def load_images(config: Config, device: torch.device) -> torch.Tensor:
    """The MNIST training images (N, 1, 28, 28) in [-1, 1], on the device."""
    from mnist_data import load_mnist  # torchvision import; after the cheap checks

    images, _ = load_mnist(config.data_dir, train=True, download=config.download)
    if config.batch_size > images.shape[0]:
        raise UserError(f"--batch_size {config.batch_size} is larger than the training set ({images.shape[0]} images)")
    # The whole set lives on the device (188 MB as float32): a batch is one gather, no DataLoader.
    return images.to(device)


def build_run(config: Config, device: torch.device, folder: RunFolder, images: torch.Tensor) -> Run:
    """Models, optimisers and noise from the seed, in this order, so a seeded run is the same wherever it is built."""
    set_seed(config.seed)
    generator, discriminator, ema = build_models(config, device)
    opt_g, opt_d = make_optimizers(generator, discriminator, config.lr, device)
    # auto is timed on copies under a forked RNG: the run's weights and random streams are untouched.
    precision, why = resolve_precision(config.precision, device, generator, discriminator, config.batch_size)
    if config.resume and why == "--precision":
        why = "as the checkpoint was trained"
    config = replace(config, precision=precision)  # bf16 or fp32, which the checkpoint records
    autocast = autocast_factory(precision, device)
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    fixed_noise = torch.randn(N_SAMPLES, config.latent_dim, generator=torch.Generator().manual_seed(config.seed + 1))
    return Run(config, device, folder, images, generator, discriminator, ema, opt_g, opt_d, autocast,
               shuffle_gen, fixed_noise, precision_why=why)


def restore(run: Run, ckpt: dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimiser moments, noise, RNG streams and the place in the schedule."""
    try:
        run.generator.load_state_dict(ckpt["generator"])
        run.discriminator.load_state_dict(ckpt["discriminator"])
        run.opt_g.load_state_dict(ckpt["opt_g"])
        run.opt_d.load_state_dict(ckpt["opt_d"])
        if run.ema is not None:
            run.ema.load_state_dict(ckpt["generator_ema"])
        run.shuffle_gen.set_state(ckpt["rng"]["shuffle"])
        set_rng_state(ckpt["rng"], run.device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise UserError(f"--resume: {run.folder.checkpoint} does not fit this run "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    run.fixed_noise = ckpt["fixed_noise"]
    run.start_epoch, run.iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
    run.skip_batches = int(ckpt.get("batch_in_epoch", 0))
    if run.iteration > run.half_iter and ckpt["config"].get("n_epochs") != run.config.n_epochs:
        print(f"{PROG}: note: the new halfway point (iteration {run.half_iter}) has already passed; "
              f"grid_half.png stays the one of the earlier schedule")


def setup_run(config: Config, command: str | None) -> Run:
    """Check everything the run needs (cheapest first), build it, and start its folder."""
    device = pick_device(config.device)
    check_memory(config, device)
    folder = RunFolder(config.out, PROG)
    folder.claim(config.resume, config.overwrite)
    ckpt = folder.load_checkpoint(config, RESUME_MUST_MATCH) if config.resume else None
    asked = config
    if ckpt is not None:  # auto settings continue as the run resolved them: the same rounding as before
        saved = ckpt["config"]
        config = replace(config, precision=saved["precision"] if config.precision == "auto" else config.precision)
        if not isinstance(config.precision, str) or config.precision not in ("bf16", "fp32"):
            raise UserError(f"--resume: {folder.checkpoint} records no precision this script knows")
    threads, threads_why = set_threads(config.threads)
    keep_freed_memory()  # the same tensors are freed and allocated every iteration: no page faults for them
    config = replace(config, threads=threads)  # recorded: the count the run started with
    scorer = load_scorer() if config.eval_scores else None  # now rather than after hours of training
    run = build_run(config, device, folder, load_images(config, device))
    run.scorer = scorer
    if asked.threads == 0 and device.type == "cpu":
        run.governor = ThreadGovernor(most=TORCH_THREADS)
        threads_why += ", then following the cores other jobs leave idle"
    if ckpt is not None:
        restore(run, ckpt)
    run.fixed_noise = run.fixed_noise.to(device)

    record = {**asdict(run.config), "precision_asked": asked.precision, "threads_asked": asked.threads,
              "device_used": str(device),
              "n_train": run.n_train, "iterations_per_epoch": run.iters_per_epoch,
              "command": command, "resumed_at_iteration": run.iteration}
    folder.start(record, resumed_at=None if ckpt is None else run.iteration)
    print(f"{PROG}: {device}, {run.config.precision} ({run.precision_why}), {threads} threads ({threads_why}); "
          f"{run.n_train} images, {run.iters_per_epoch} iterations/epoch of "
          f"{config.batch_size} (last {run.n_train % config.batch_size} images of each shuffle dropped), "
          f"{'resuming at iteration ' + str(run.iteration) if ckpt else 'new run'} -> {folder.out}")
    if ckpt is None:
        save_grid(run)
        snapshot(run, "start")
        if run.half_iter == 0:
            snapshot(run, "half")
    return run


# ----------------------------------------------------------------------------- the loop


def train(config: Config, command: str | None = None) -> dict[str, Any]:
    """Train (or resume) a GAN run into config.out; return a summary with the output paths.

    Raises UserError for bad input, TrainingInterrupted after Ctrl-C (checkpoint saved),
    TrainingDiverged when a loss or weight becomes non-finite (nothing non-finite is written).
    """
    config.validate()
    # A resume compares where the data is, not how its path was typed.
    config = replace(config, data_dir=str(Path(config.data_dir).resolve()))
    run = setup_run(config, command)

    from tqdm import tqdm

    run.generator.train()
    run.discriminator.train()
    t0, start_iteration = time.perf_counter(), run.iteration
    with stop_on_sigint() as stop, tqdm(total=run.total_iters, initial=run.iteration, unit="it",
                                        dynamic_ncols=True, mininterval=0.5) as run.bar:
        for epoch in range(run.start_epoch, config.n_epochs):
            train_epoch(run, epoch, stop)
    return finish_run(run, time.perf_counter() - t0, run.iteration - start_iteration)


def train_epoch(run: Run, epoch: int, stop: dict[str, bool]) -> None:
    """One pass over a new shuffle of the training set (from run.skip_batches on a resume), then a checkpoint."""
    config, size = run.config, run.config.batch_size
    shuffle_state = run.shuffle_gen.get_state()  # saved: a resume redraws this epoch's order
    perm = torch.randperm(run.n_train, generator=run.shuffle_gen).to(run.device)
    for b in range(run.skip_batches, run.iters_per_epoch):
        real = run.images[perm[b * size:(b + 1) * size]]  # (B, 1, 28, 28)
        if config.lr_decay != "none":
            set_lr(run, lr_at(config, run.iteration, run.total_iters))
        run.window.append(train_step(run.generator, run.discriminator, run.opt_g, run.opt_d, real,
                                     run.autocast, 1.0 - config.label_smoothing))
        if run.ema is not None:
            update_ema(run.ema, run.generator, config.ema, first=run.iteration == 0)
        run.iteration += 1
        run.bar.update(1)
        if run.iteration % LOG_EVERY == 0:
            log_losses(run, epoch)
            if run.governor is not None:
                run.governor.check()
        if run.iteration % config.save_interval == 0:
            save_grid(run)
        if run.iteration == run.half_iter:
            snapshot(run, "half")
        if stop["stop"] and b + 1 < run.iters_per_epoch:
            log_losses(run, epoch)  # refuses to save a diverged state
            save_checkpoint(run, epoch, b + 1, shuffle_state)
            raise interrupted(run, f"epoch {epoch + 1}")
    run.skip_batches = 0
    log_losses(run, epoch)
    save_checkpoint(run, epoch + 1, 0, run.shuffle_gen.get_state())
    if stop["stop"] and epoch + 1 < config.n_epochs:
        raise interrupted(run, f"end of epoch {epoch + 1}")


def finish_run(run: Run, seconds: float, done: int) -> dict[str, Any]:
    """The end snapshot, the loss plot, a summary line; scores with --eval_scores."""
    snapshot(run, "end")
    run.folder.plot_losses()
    out = run.folder.out
    changes = 0 if run.governor is None else run.governor.changes
    print(f"{PROG}: {done} iterations in {seconds:.1f} s ({1000 * seconds / max(done, 1):.2f} ms/iteration"
          f"{f'; threads changed {changes} times to follow other jobs' if changes else ''}); outputs in {out}")
    summary: dict[str, Any] = {
        "out": out, "iterations": run.iteration, "epochs": run.config.n_epochs, "seconds": seconds,
        "device": str(run.device), "precision": run.config.precision, "checkpoint": run.folder.checkpoint,
        "grids": {t: out / f"grid_{t}.png" for t in ("start", "half", "end")},
        "generators": {t: out / f"generator_{t}.pt" for t in ("start", "half", "end")},
        "losses_csv": run.folder.csv, "losses_png": out / "losses.png",
    }
    if run.scorer is not None:
        summary["scores"] = run.scorer(out, data_dir=run.config.data_dir, device=run.device,
                                       download=run.config.download)
    return summary


def set_lr(run: Run, lr: float) -> None:
    for group in (*run.opt_g.param_groups, *run.opt_d.param_groups):
        group["lr"] = lr


def log_losses(run: Run, epoch: int) -> None:
    """Average the window into one row of losses.csv; stop on a non-finite loss (one host sync per call)."""
    if not run.window:
        return
    stats = torch.stack(run.window).float().mean(0).tolist()
    run.window.clear()
    if not all(math.isfinite(v) for v in stats[:2]):
        raise run.diverged(f"the loss (loss_d={stats[0]}, loss_g={stats[1]})")
    run.folder.log(run.iteration, epoch + 1, stats)
    run.bar.set_postfix(loss_d=f"{stats[0]:.3f}", loss_g=f"{stats[1]:.3f}",
                        d_real=f"{stats[2]:.2f}", d_fake=f"{stats[3]:.2f}", refresh=False)


def finite_sampler(run: Run) -> Generator:
    """run.sampler(), refused when its weights are not finite: no grid or file is drawn from a diverged G."""
    generator = run.sampler()
    if not all_finite(generator.state_dict()):
        raise run.diverged("the generator's weights")
    return generator


def save_grid(run: Run) -> None:
    run.folder.save_grid(finite_sampler(run), run.fixed_noise, f"grids/iter_{run.iteration:07d}.png")


def snapshot(run: Run, tag: str) -> None:
    run.folder.snapshot(finite_sampler(run), run.fixed_noise, tag)


def save_checkpoint(run: Run, epochs_done: int, batch_in_epoch: int, shuffle_state: torch.Tensor) -> None:
    """Everything a resume needs; refused when a weight or optimiser moment is not finite."""
    state = {
        "generator": run.generator.state_dict(), "discriminator": run.discriminator.state_dict(),
        **({} if run.ema is None else {"generator_ema": run.ema.state_dict()}),
        "opt_g": run.opt_g.state_dict(), "opt_d": run.opt_d.state_dict(),
        "epoch": epochs_done,
        "batch_in_epoch": batch_in_epoch,  # updates done in epoch `epochs_done` (0 at an epoch boundary)
        "iteration": run.iteration, "rng": get_rng_state(shuffle_state, run.device),
        "config": asdict(run.config), "fixed_noise": run.fixed_noise.cpu(),
    }
    if not all_finite(list(tensors_in(state))):
        raise run.diverged("the weights")
    run.folder.save_checkpoint(state)


def interrupted(run: Run, where: str) -> TrainingInterrupted:
    """Ctrl-C after the checkpoint was saved: plot what was logged and say how to continue."""
    run.folder.plot_losses()
    return TrainingInterrupted(f"interrupted at iteration {run.iteration} ({where}); checkpoint saved to "
                               f"{run.folder.checkpoint}; continue with the same flags plus --resume")


# ----------------------------------------------------------------------------- the command line


def parse_args(argv: list[str] | None = None) -> Config:
    """Command line -> Config (the defaults come from Config itself)."""
    d = Config()
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
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
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed (0 to 2**32-1) of weights, noise, shuffling and the fixed grid noise")
    p.add_argument("--device", default=d.device, help="where to train: auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default=d.precision, choices=["auto", "bf16", "fp32"],
                   help="bf16 autocast (float32 master weights) or plain float32; auto times both at start-up "
                        "and keeps bf16 only if clearly faster here (a seeded run repeats exactly with a fixed choice)")
    p.add_argument("--d_dropout", type=float, default=d.d_dropout, help="dropout after D's hidden layers (0: none)")
    p.add_argument("--label_smoothing", type=float, default=d.label_smoothing,
                   help="one-sided: D's target for real images is 1 minus this (0: none)")
    p.add_argument("--ema", type=float, default=d.ema,
                   help="decay of the moving average of G's weights used for samples and saved generators (0: off)")
    p.add_argument("--lr_decay", default=d.lr_decay, choices=["none", "linear"],
                   help="linear: --lr for the first half of training, then linearly down to 0 at the end")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads; 0: as many as cores are idle, looked at again every 5 s, since torch's "
                        "threads spin-wait for each other and a core taken by another job slows every operation "
                        "(a seeded run repeats exactly only with a fixed --threads)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds an earlier run, deleting that run's outputs")
    p.add_argument("--eval_scores", action="store_true",
                   help="after training, score the start/half/end generators (part2/evaluate.py's score_run)")
    args = p.parse_args(argv)
    return Config(**{f.name: getattr(args, f.name) for f in fields(Config)})


def main(argv: list[str] | None = None) -> None:
    """CLI entry: one line on stderr and exit 2 for bad input, 130 after Ctrl-C, 1 on divergence."""
    config = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join([PROG, *argv])
    run_cli(PROG, lambda: run_training(config, command))


def run_training(config: Config, command: str) -> None:
    """train(); a Ctrl-C outside the loop also says whether a checkpoint is there."""
    try:
        train(config, command)  # TrainingInterrupted and TrainingDiverged: run_cli's exits 130 and 1
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
        ckpt = Path(config.out) / "checkpoint.pt"
        kept = f"{ckpt} holds the last checkpoint" if ckpt.is_file() else "no checkpoint was saved"
        print(f"{PROG}: interrupted; {kept}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

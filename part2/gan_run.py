"""Everything a long my_gan.py run needs besides the GAN itself: its folder, checkpoints, --resume, stop
signals, the precision and thread choices. my_gan.py uses it through a handful of calls on `run`.

What a run writes under --out:

    config.json                  the settings, the command, and what the run derived (halfway iteration, ...)
    checkpoint.pt                models, optimisers, RNG states and place; at each epoch's end and on a stop signal
    losses.csv, losses.png       mean losses and D outputs, one row per LOG_EVERY iterations and at each epoch's end
    grids/iter_*.png             5x5 grids from the fixed noise every --save_interval iterations
    grid_{start,half,end}.png    the same grid at three points of training, with
    generator_{start,half,end}.pt  the generator that drew it

Every file is written atomically (temp file, then rename) except the rows appended to losses.csv,
which a resume truncates to the checkpoint. A folder that holds a run is continued (--resume) or
started afresh (--overwrite), never silently replaced, and a second run on a folder is refused while
the first holds it. A run stopped by Ctrl-C, SIGTERM or SIGHUP and resumed writes the same files,
bit for bit, as one that ran straight through (config.json aside: it records the command, where the run
resumed, and a thread count chosen afresh).
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import importlib.util
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cpu_threads import TORCH_THREADS, ThreadGovernor, set_threads
from cs324_utils import (
    TrainingFailed,
    UserError,
    all_finite,
    atomic_save,
    atomic_write,
    check_fits,
    check_out,
    check_threads,
    pick_device,
    refuse_existing_run,
    remove_stray_tmp,
    write_json,
)
from file_checks import Fields, read_checkpoint, read_csv, tensors_in
from models import parameter_count, save_generator
from pick_precision import autocast_factory, choose_precision, time_precisions
from stabilisers import BN_REFRESH_SIZE
from training_run import StopRequests, check_budget, check_same_settings, hold_folder

PROG = "my_gan.py"
LOG_EVERY = 50  # iterations averaged into one row of losses.csv
CSV_HEADER = ["iteration", "epoch", "loss_d", "loss_g", "d_real", "d_fake"]
SNAPSHOTS = ("start", "half", "end")
# Any of these makes a folder a run that a new one must not write over (--overwrite deletes them).
RUN_MARKERS = ("checkpoint.pt", "config.json", "losses.csv", "losses.png", "scores.json",
               *(f"generator_{t}.pt" for t in SNAPSHOTS), *(f"grid_{t}.png" for t in SNAPSHOTS))
# A resumed run must train the same problem on the same data: --resume refuses other values of these.
RESUME_MUST_MATCH = ("latent_dim", "batch_size", "lr", "d_dropout", "label_smoothing", "ema", "lr_decay", "seed",
                     "data_dir")
# These may change: n_epochs (which stretches the --lr_decay schedule), where and how the run is kept and
# where it runs; precision only to auto, which continues in the precision the run was trained in.
RESUME_MAY_CHANGE = ("n_epochs", "save_interval", "out", "resume", "overwrite", "device", "precision", "threads",
                     "download", "eval_scores")
FLOOR_S = 1e-4  # a lower bound of an iteration anywhere (a GFLOP of products at 10 TFLOP/s)
# glibc's mallopt parameters (malloc.h): freed blocks up to 32 MB stay in the heap, up to 1 GB of them.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, MMAP_THRESHOLD, TRIM_THRESHOLD = -1, -3, 32 << 20, 1 << 30


@dataclass
class Place:
    """Where training starts: after `iteration` updates, `batch` of them in epoch `epoch` (0-based)."""

    epoch: int
    batch: int
    iteration: int
    fixed_noise: torch.Tensor


class GanRun:
    """One run of my_gan.py: `with GanRun(config, command) as run:` refuses what cannot run (cheap checks
    first), then holds --out until the run ends."""

    def __init__(self, config: Any, command: str | None) -> None:
        self.config, self.command = config, command
        self.out = check_out(config.out, config.resume, config.overwrite)
        check_threads(config.threads)
        if config.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"--precision must be auto, bf16 or fp32, got {config.precision!r}")
        self.device = pick_device(config.device)
        check_memory(config, self.device)
        self.checkpoint, self.csv = self.out / "checkpoint.pt", self.out / "losses.csv"
        self.ckpt: Fields | None = None
        self.window: list[torch.Tensor] = []  # train_step's stats since the last row of losses.csv
        self.stack = contextlib.ExitStack()
        self.governor: ThreadGovernor | None = None
        self.step_seconds: dict[str, float] = {}  # a G and D step per precision, where --precision auto timed them
        self.bar: Any = None
        self.started = time.perf_counter()
        self.first_iteration = 0

    def __enter__(self) -> GanRun:
        self.stack.enter_context(hold_folder(self.out, PROG))
        try:
            self._claim()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stack.close()
        if isinstance(error, TrainingFailed):  # say what was kept, whatever found the failure
            epoch = max(self.iteration - 1, 0) // max(getattr(self, "iters_per_epoch", 1), 1)
            kept = (f"{self.checkpoint} keeps the last good state" if self.checkpoint.is_file()
                    else "no checkpoint had been saved yet")
            error.args = (f"{error} by iteration {self.iteration} (epoch {epoch + 1}); stopped, nothing non-finite "
                          f"written; {kept} (try a lower --lr or --precision fp32)",)

    # ------------------------------------------------------------------------- start-up

    def _claim(self) -> None:
        """Refuse an earlier run unless --resume or --overwrite; read the checkpoint of a resume."""
        config = self.config
        refuse_existing_run(self.out, RUN_MARKERS, config.resume, config.overwrite)
        if config.resume and not self.checkpoint.is_file():
            raise UserError(f"--resume: no checkpoint at {self.checkpoint} (run without --resume to start)")
        for folder in (self.out, self.out / "grids"):  # a run killed inside a write leaves its temp file
            if folder.is_dir():
                remove_stray_tmp(folder)
        if config.resume:
            self.ckpt = read_checkpoint(self.checkpoint, "--resume: checkpoint")
            saved = self.ckpt.fields("config")
            check_same_settings(saved, config, RESUME_MUST_MATCH)
            trained_in = saved.str("precision", ("bf16", "fp32"))
            if config.precision not in ("auto", trained_in):
                raise UserError(f"--resume: {self.checkpoint} was trained with --precision {trained_in}, not "
                                f"{config.precision}; resume with the same value (or auto), or start afresh with "
                                f"--overwrite")
            done = self.ckpt.int("epoch", 0)
            if done >= config.n_epochs:
                raise UserError(f"--resume: the checkpoint has already completed {done} epochs; "
                                f"raise --n_epochs above {done} to continue")
        self.scorer = load_scorer() if config.eval_scores else None  # now rather than after hours of training
        threads, self.threads_why = set_threads(config.threads)
        self.threads = threads
        keep_freed_memory()
        if config.threads == 0 and self.device.type == "cpu":
            self.governor = ThreadGovernor(most=TORCH_THREADS)
            self.threads_why += ", then following the cores other jobs leave idle"

    def choose_precision(self, generator: nn.Module, discriminator: nn.Module) -> Callable[[], Any]:
        """The context each forward runs in: bf16 autocast (float32 master weights) or nothing.

        auto times both on copies of G and D on a CPU (pick_precision.py); a resume continues in the
        precision the run was trained in.
        """
        asked, device = self.config.precision, self.device
        trained_in = self.ckpt.fields("config").str("precision", ("bf16", "fp32")) if self.ckpt is not None else None
        if device.type == "mps" and asked != "fp32":
            self.precision, self.precision_why = "fp32", "bf16 autocast is not used on mps"
        elif device.type == "cuda" and asked != "fp32" and not torch.cuda.is_bf16_supported():
            self.precision, self.precision_why = "fp32", "this GPU has no bf16"
        elif trained_in is not None:  # auto continues as the run was trained (a different value was refused)
            self.precision, self.precision_why = trained_in, "as the checkpoint was trained"
        elif asked != "auto":
            self.precision, self.precision_why = asked, "--precision"
        elif device.type != "cpu":  # these small layers are launch-bound on a GPU: bf16 would only add casts
            self.precision, self.precision_why = "fp32", "auto on a GPU"
        else:
            self.precision, self.precision_why, self.step_seconds = choose_precision(
                generator, discriminator, self.config.batch_size, device)
        return autocast_factory(self.precision, device)

    def start(self, generator: nn.Module, discriminator: nn.Module, ema: nn.Module | None,
              opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, shuffle: torch.Generator,
              fixed_noise: torch.Tensor, n_train: int, iters_per_epoch: int, total: int, half: int) -> Place:
        """Restore a resume's state into these objects (or clear an earlier run's outputs), write config.json,
        and from here on let a stop signal end the loop between updates. Returns where training starts."""
        config = self.config
        self.state = dict(generator=generator, discriminator=discriminator, ema=ema, opt_g=opt_g, opt_d=opt_d,
                          shuffle=shuffle, fixed_noise=fixed_noise)
        self.iters_per_epoch, self.total, self.half = iters_per_epoch, total, half
        check_budget(total, lambda: self._seconds_per_update(generator, discriminator), f"--n_epochs {config.n_epochs}")
        place = Place(0, 0, 0, fixed_noise) if self.ckpt is None else self._restore(self.ckpt)
        if self.ckpt is None:
            self._clear()
        truncate_csv(self.csv, place.iteration if self.ckpt is not None else -1)
        self.iteration = self.first_iteration = place.iteration
        record = {**asdict(config), "precision": self.precision, "precision_asked": config.precision,
                  "threads": self.threads, "threads_asked": config.threads, "device_used": str(self.device),
                  "n_train": n_train, "iterations_per_epoch": iters_per_epoch,
                  "total_iterations": self.total, "half_iteration": half, "command": self.command,
                  "resumed_at_iteration": place.iteration if self.ckpt is not None else None}
        write_json(record, self.out / "config.json")
        print(f"{PROG}: {self.device}, {self.precision} ({self.precision_why}), {self.threads} threads "
              f"({self.threads_why}); {iters_per_epoch} iterations/epoch of {config.batch_size}, "
              f"{'resuming at iteration ' + str(place.iteration) if self.ckpt is not None else 'new run'} "
              f"-> {self.out}", flush=True)
        self.stop = self.stack.enter_context(StopRequests())
        from tqdm import tqdm
        self.bar = tqdm(total=self.total, initial=place.iteration, unit="it", dynamic_ncols=True, mininterval=0.5)
        self.started = time.perf_counter()
        return place

    def _seconds_per_update(self, generator: nn.Module, discriminator: nn.Module) -> float:
        """An iteration's time here: a G and D step as --precision auto timed it, timed now on a CPU (copies, the
        random state forked), or FLOOR_S elsewhere."""
        if self.precision in self.step_seconds:
            return self.step_seconds[self.precision]
        if self.device.type != "cpu":
            return FLOOR_S
        return time_precisions(generator, discriminator, self.config.batch_size, self.device)[self.precision]

    def _restore(self, ckpt: Fields) -> Place:
        """The checkpoint's weights, optimiser moments, noise, RNG streams, unlogged stats and place."""
        s, config = self.state, self.config
        s["generator"].load_state_dict(ckpt.state_dict("generator", s["generator"]))
        s["discriminator"].load_state_dict(ckpt.state_dict("discriminator", s["discriminator"]))
        if s["ema"] is not None:
            s["ema"].load_state_dict(ckpt.state_dict("generator_ema", s["ema"]))
        ckpt.optimizer_state("opt_g", s["opt_g"])
        ckpt.optimizer_state("opt_d", s["opt_d"])
        epoch = ckpt.int("epoch", 0, config.n_epochs - 1)
        batch = ckpt.int("batch_in_epoch", 0, self.iters_per_epoch - 1)
        iteration = ckpt.int("iteration", epoch * self.iters_per_epoch + batch, epoch * self.iters_per_epoch + batch)
        noise = s["fixed_noise"] = ckpt.tensor("fixed_noise", (25, config.latent_dim), torch.float32)
        window = ckpt.tensor("window", None, torch.float32) if ckpt.has("window") else torch.empty(0, 4)
        if window.dim() != 2 or window.shape[1] != 4 or window.shape[0] >= LOG_EVERY:
            raise ckpt.error("window", f"must have shape (under {LOG_EVERY}, 4), not {tuple(window.shape)}")
        self.window = list(window.to(self.device))
        rng = ckpt.fields("rng")
        try:
            s["shuffle"].set_state(rng.tensor("shuffle", None, torch.uint8))
            torch.set_rng_state(rng.tensor("torch", None, torch.uint8))
            if self.device.type == "cuda" and rng.has("cuda"):
                torch.cuda.set_rng_state(rng.tensor("cuda", None, torch.uint8), self.device)
            elif self.device.type == "mps" and rng.has("mps"):
                torch.mps.set_rng_state(rng.tensor("mps", None, torch.uint8))
        except (RuntimeError, ValueError) as exc:
            raise ckpt.error("rng", f"is not a random state this torch can restore ({type(exc).__name__})") from None
        taken = ckpt.int("half_iteration", 1, default=None)  # where grid_half.png was drawn, if it has been
        if taken is not None and taken <= iteration and taken != self.half:
            print(f"{PROG}: note: the halfway grid was drawn at iteration {taken} of the earlier schedule; the new "
                  f"halfway point, iteration {self.half}, has passed, so grid_half.png stays that one")
            self.half = taken
        return Place(epoch, batch, iteration, noise)

    def _clear(self) -> None:
        """A new run: delete an earlier run's outputs here (--overwrite asked for it by name)."""
        names = [*RUN_MARKERS, *(p.name for p in self.out.glob("interpolation_*.png"))]
        for path in [*(self.out / "grids").glob("iter_*.png"), *(self.out / n for n in names)]:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------------- the loop's calls

    def new_epoch(self, shuffle: torch.Generator) -> None:
        self.shuffle_state = shuffle.get_state()  # a resume from mid-epoch redraws this epoch's order

    def log(self, iteration: int, epoch: int, stats: torch.Tensor) -> None:
        """Keep train_step's stats; every LOG_EVERY iterations average them into a row of losses.csv."""
        self.iteration = iteration
        self.window.append(stats)
        self.bar.update(1)
        if iteration % LOG_EVERY == 0:
            self._flush(epoch)
            if self.governor is not None:
                self.governor.check()

    def _flush(self, epoch: int) -> None:
        """One row of losses.csv from the kept stats; a non-finite loss stops the run (one host sync)."""
        if not self.window:
            return
        stats = torch.stack(self.window).float().mean(0).tolist()
        self.window.clear()
        if not all(math.isfinite(v) for v in stats[:2]):
            raise self.diverged(f"the loss (loss_d={stats[0]}, loss_g={stats[1]})")
        try:
            with open(self.csv, "a", newline="") as f:
                csv.writer(f).writerow([self.iteration, epoch + 1] + [f"{v:.6f}" for v in stats])
        except OSError as exc:
            raise UserError(f"cannot write {self.csv}: {exc.strerror or type(exc).__name__}") from None
        self.bar.set_postfix(loss_d=f"{stats[0]:.3f}", loss_g=f"{stats[1]:.3f}", d_real=f"{stats[2]:.2f}",
                             d_fake=f"{stats[3]:.2f}", refresh=False)

    def stop_if_asked(self, epoch: int, batches_done: int) -> None:
        """After a stop signal in mid-epoch: save the checkpoint (its unlogged stats in it) and stop."""
        if self.stop.signum and batches_done < self.iters_per_epoch:
            self._save_checkpoint(epoch, batches_done, self.shuffle_state)
            raise self._stopped(f"epoch {epoch + 1}")

    def end_epoch(self, epochs_done: int) -> None:
        """The epoch's last row of losses.csv and a checkpoint; a stop signal ends the run here."""
        self._flush(epochs_done - 1)
        self._save_checkpoint(epochs_done, 0, self.state["shuffle"].get_state())
        if self.stop.signum and epochs_done < self.config.n_epochs:
            raise self._stopped(f"end of epoch {epochs_done}")

    def save_generator(self, generator: nn.Module, tag: str) -> None:
        if not all_finite(generator.state_dict()):
            raise self.diverged("the generator's weights")
        save_generator(generator, self.out / f"generator_{tag}.pt")

    def _save_checkpoint(self, epoch: int, batch_in_epoch: int, shuffle_state: torch.Tensor) -> None:
        """Everything a resume needs; refused when a weight, moment or kept loss is not finite."""
        s = self.state
        window = torch.stack(self.window).float().cpu() if self.window else torch.empty(0, 4)
        rng = {"torch": torch.get_rng_state(), "shuffle": shuffle_state}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        elif self.device.type == "mps":
            rng["mps"] = torch.mps.get_rng_state()
        state = {
            "generator": s["generator"].state_dict(), "discriminator": s["discriminator"].state_dict(),
            **({} if s["ema"] is None else {"generator_ema": s["ema"].state_dict()}),
            "opt_g": s["opt_g"].state_dict(), "opt_d": s["opt_d"].state_dict(),
            "epoch": epoch, "batch_in_epoch": batch_in_epoch,  # updates done in epoch `epoch` (0 at its start)
            "iteration": self.iteration, "rng": rng, "window": window, "half_iteration": self.half,
            "config": {**asdict(self.config), "precision": self.precision}, "fixed_noise": s["fixed_noise"].cpu(),
        }
        if not all_finite(list(tensors_in(state))):
            raise self.diverged("the weights")
        atomic_save(state, self.checkpoint)

    # ------------------------------------------------------------------------- the end

    def finish(self) -> dict[str, Any]:
        """The loss plot, a summary line; scores of the three generators with --eval_scores."""
        self.stop.end()
        plot_losses(self.csv, self.out / "losses.png")
        seconds, done = time.perf_counter() - self.started, self.iteration - self.first_iteration
        changes = 0 if self.governor is None else self.governor.changes
        self.bar.close()
        print(f"{PROG}: {done} iterations in {seconds:.1f} s ({1000 * seconds / max(done, 1):.2f} ms/iteration"
              f"{f'; threads changed {changes} times to follow other jobs' if changes else ''}); "
              f"outputs in {self.out}")
        summary: dict[str, Any] = {
            "out": self.out, "iterations": self.iteration, "epochs": self.config.n_epochs, "seconds": seconds,
            "device": str(self.device), "precision": self.precision, "checkpoint": self.checkpoint,
            "grids": {t: self.out / f"grid_{t}.png" for t in SNAPSHOTS},
            "generators": {t: self.out / f"generator_{t}.pt" for t in SNAPSHOTS},
            "losses_csv": self.csv, "losses_png": self.out / "losses.png",
        }
        if self.scorer is not None:
            summary["scores"] = self.scorer(self.out, data_dir=self.config.data_dir, device=self.device,
                                            download=self.config.download)
        return summary

    def diverged(self, what: str) -> TrainingFailed:
        """The error for a non-finite loss or weight (__exit__ adds where, and what was kept)."""
        return TrainingFailed(f"{what} became non-finite")

    def _stopped(self, where: str) -> Exception:
        plot_losses(self.csv, self.out / "losses.png")
        return self.stop.stopped(f"at iteration {self.iteration} ({where}); checkpoint saved to "
                                 f"{self.checkpoint}; continue with the same flags plus --resume")


# ----------------------------------------------------------------------------- helpers


def check_memory(config: Any, device: torch.device) -> None:
    """Refuse a --latent_dim or --batch_size whose models or activations cannot fit (rough upper estimates)."""
    n_g, n_d = parameter_count(config.latent_dim)
    # float32 weights, gradients and two Adam moments of both networks, plus G's average and its bf16 copy.
    models = 4 * (6 * n_g + 4 * n_d)
    # Per image: z, G's and D's activations (D sees 2B images, then B again) and their gradients.
    per_image = 4 * 2 * (config.latent_dim + 20_000)
    batch = max(config.batch_size, BN_REFRESH_SIZE)
    check_fits(models, f"--latent_dim {config.latent_dim}", device)
    check_fits(models + batch * per_image, f"--batch_size {config.batch_size} with --latent_dim {config.latent_dim}",
               device)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (a no-op elsewhere); True if it took effect.

    A training step allocates and frees the same multi-megabyte tensors every iteration (a weight's
    bf16 copy, its gradient). By default glibc returns blocks of that size to the kernel when they are
    freed, so the next step takes a page fault for every 4 KB of them again (about 100 an iteration).
    With both thresholds raised, freed blocks stay in the heap: the numbers computed are the same.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                          TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def read_losses(path: Path) -> list[dict[str, str]]:
    """The complete rows of losses.csv (a last row torn by a kill left out); one line if it is damaged."""
    return read_csv(path, CSV_HEADER)


def truncate_csv(path: Path, last_iteration: int) -> None:
    """Keep the rows up to last_iteration (a run stopped mid-epoch logged beyond its checkpoint); -1 keeps none."""
    rows = [r for r in read_losses(path) if int(float(r["iteration"])) <= last_iteration]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_HEADER)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def plot_losses(csv_path: Path, png_path: Path) -> None:
    """Loss curves and mean D outputs from losses.csv, written atomically."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot backend switched under a notebook

    rows = read_losses(csv_path)
    if not rows:
        return
    it = [int(float(r["iteration"])) for r in rows]
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(it, [float(r["loss_d"]) for r in rows], label="D loss")
    ax1.plot(it, [float(r["loss_g"]) for r in rows], label="G loss (non-saturating)")
    ax1.set(xlabel="iteration", ylabel=f"binary cross-entropy (mean over {LOG_EVERY} iterations)",
            title="losses")
    ax1.legend()
    ax2.plot(it, [float(r["d_real"]) for r in rows], label="D(x), real images")
    ax2.plot(it, [float(r["d_fake"]) for r in rows], label="D(G(z)), generated images")
    ax2.set(xlabel="iteration", ylabel="mean sigmoid output of D", ylim=(0, 1), title="discriminator outputs")
    ax2.legend()
    fig.suptitle(f"GAN training in {png_path.parent.name}/: each point a mean over {LOG_EVERY} iterations")
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def load_scorer() -> Callable[..., dict]:
    """score_run of part2/evaluate.py, imported by its path: no other module named evaluate can stand in."""
    path = Path(__file__).resolve().parent / "evaluate.py"
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

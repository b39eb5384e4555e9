"""The output folder of one my_gan.py run: what a run writes under --out, and reading it back to resume.

    config.json                  the config and command of the latest start or resume
    checkpoint.pt                models, optimisers, RNG states and position; at each epoch end and on Ctrl-C
    losses.csv, losses.png       mean losses and D outputs, one row per LOG_EVERY iterations
    grids/iter_*.png             5x5 grids from the fixed noise every --save_interval iterations
    grid_{start,half,end}.png    the same grid at three points of training,
    generator_{start,half,end}.pt  with the generator that drew it

Every file is written atomically (temp file, then rename) except the rows appended to losses.csv,
which a resume truncates to the checkpoint. A folder that already holds a run is continued
(--resume) or started afresh (--overwrite), never silently replaced.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import (
    TrainingFailed,
    TrainingStopped,
    UserError,
    all_finite,
    atomic_save,
    atomic_write,
    check_writable_dir,
    refuse_existing_run,
    remove_stray_tmp,
    safe_load,
    write_json,
)
from models import Generator, save_generator
from sampling import generate

LOG_EVERY = 50  # iterations averaged into one row of losses.csv
CSV_HEADER = ["iteration", "epoch", "loss_d", "loss_g", "d_real", "d_fake"]
SNAPSHOTS = ("start", "half", "end")
# Any of these makes a folder an earlier run, which a new run may not silently replace.
# Any of these makes a folder a run that a new one must not write over (clear() deletes them on --overwrite).
RUN_MARKERS = ("checkpoint.pt", "config.json", "losses.csv", "losses.png", "scores.json",
               *(f"generator_{t}.pt" for t in SNAPSHOTS), *(f"grid_{t}.png" for t in SNAPSHOTS))
CHECKPOINT_KEYS = ("generator", "discriminator", "opt_g", "opt_d", "epoch", "iteration", "rng", "config",
                   "fixed_noise")


class TrainingInterrupted(TrainingStopped):
    """Ctrl-C during training: the checkpoint has been saved; the CLI exits 130."""


class TrainingDiverged(TrainingFailed):
    """A loss or weight became NaN or inf; nothing non-finite was written; the CLI exits 1."""


class RunFolder:
    """The files of one run under `out`; the training loop calls these, it never writes files itself."""

    def __init__(self, out: str | Path, prog: str = "my_gan.py") -> None:
        self.out = Path(out)
        self.prog = prog  # named in messages
        self.grids = self.out / "grids"
        self.csv = self.out / "losses.csv"
        self.checkpoint = self.out / "checkpoint.pt"

    def claim(self, resume: bool, overwrite: bool) -> None:
        """Refuse to start over an earlier run unless asked; prove the folder writable; drop torn temp files."""
        refuse_existing_run(self.out, RUN_MARKERS, resume, overwrite)
        if resume and not self.checkpoint.is_file():
            hint = "start afresh there with --overwrite" if self.holds_run() else "run without --resume to start"
            raise UserError(f"--resume: no checkpoint at {self.checkpoint} ({hint})")
        check_writable_dir(self.out)
        if resume or overwrite:  # a run killed inside a write leaves its temp file behind
            for folder in (self.out, self.grids):
                if folder.is_dir():
                    remove_stray_tmp(folder)

    def holds_run(self) -> bool:
        return any((self.out / m).exists() for m in RUN_MARKERS)

    def load_checkpoint(self, config: Any, must_match: tuple[str, ...]) -> dict[str, Any]:
        """checkpoint.pt, refused unless it was made with the same values of `must_match` as config."""
        ckpt = safe_load(self.checkpoint, "--resume: checkpoint")
        missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
        if missing:
            raise UserError(f"--resume: {self.checkpoint} is not a checkpoint of {self.prog} "
                            f"(missing {', '.join(missing)})")
        saved = ckpt["config"]
        if not isinstance(saved, dict) or not isinstance(ckpt["epoch"], int) or not isinstance(ckpt["iteration"], int):
            raise UserError(f"--resume: {self.checkpoint} is not a checkpoint of {self.prog} (malformed config or counters)")
        for name in must_match:
            if not same_setting(name, saved.get(name), getattr(config, name)):
                raise UserError(f"--resume: the checkpoint was made with --{name} {saved.get(name)}, "
                                f"not {getattr(config, name)}; pass the same value or use another --out")
        if ckpt["epoch"] >= config.n_epochs:
            raise UserError(f"--resume: the checkpoint has already completed {ckpt['epoch']} epochs; "
                            f"raise --n_epochs above {ckpt['epoch']} to continue")
        return ckpt

    def start(self, record: dict[str, Any], resumed_at: int | None) -> None:
        """Write config.json; a fresh run first clears an earlier run's outputs, a resume drops later CSV rows."""
        if resumed_at is None:
            self.clear()
        truncate_csv(self.csv, -1 if resumed_at is None else resumed_at)
        write_json(record, self.out / "config.json")

    def clear(self) -> None:
        """Delete the outputs of an earlier run here (the user asked for it with --overwrite)."""
        snapshots = [self.out / f"grid_{t}.png" for t in SNAPSHOTS] + [self.out / f"generator_{t}.pt" for t in SNAPSHOTS]
        # scores.json and interpolation_*.png describe the earlier generators: they go with them.
        for path in [*self.grids.glob("iter_*.png"), *snapshots, self.checkpoint, self.out / "losses.png",
                     self.out / "scores.json", *self.out.glob("interpolation_*.png")]:
            path.unlink(missing_ok=True)

    def log(self, iteration: int, epoch: int, stats: list[float]) -> None:
        """Append one row to losses.csv."""
        try:
            with open(self.csv, "a", newline="") as f:
                csv.writer(f).writerow([iteration, epoch] + [f"{v:.6f}" for v in stats])
        except OSError as exc:
            raise UserError(f"cannot write {self.csv}: {exc.strerror or type(exc).__name__}") from None

    def save_grid(self, generator: Generator, fixed_noise: torch.Tensor, name: str) -> None:
        """5x5 grid of generator(fixed_noise) as `name` (relative to the folder)."""
        save_grid(generator, fixed_noise, self.out / name)

    def snapshot(self, generator: Generator, fixed_noise: torch.Tensor, tag: str) -> None:
        """grid_<tag>.png and generator_<tag>.pt (save_generator refuses non-finite weights)."""
        self.save_grid(generator, fixed_noise, f"grid_{tag}.png")
        save_generator(generator, self.out / f"generator_{tag}.pt")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """checkpoint.pt, atomically; a state holding a non-finite tensor is refused, not written."""
        if not all_finite(list(tensors_in(state))):
            raise UserError(f"refusing to write non-finite weights to {self.checkpoint}")
        atomic_save(state, self.checkpoint)

    def plot_losses(self) -> None:
        plot_losses(self.csv, self.out / "losses.png")

    def diverged(self, what: str, iteration: int, epoch: int) -> TrainingDiverged:
        """The error for a non-finite loss or weight; it names only files that exist."""
        kept = (f"{self.checkpoint} keeps the last good state" if self.checkpoint.is_file()
                else "no checkpoint had been saved yet")
        return TrainingDiverged(f"{what} became non-finite by iteration {iteration} (epoch {epoch + 1}); "
                                f"stopped, nothing non-finite written; {kept} (try a lower --lr or --precision fp32)")


def same_setting(name: str, saved: Any, value: Any) -> bool:
    """Whether a checkpoint's setting equals the run's; folders by where they are, not how they were typed."""
    if name == "precision" and value == "auto":  # auto continues in what the run resolved it to
        return True
    if name.endswith("_dir") and isinstance(saved, str) and isinstance(value, str):
        return Path(saved).resolve() == Path(value).resolve()
    return saved == value


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor of a nested dict / list (a checkpoint, an optimiser state)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value)


def save_grid(generator: Generator, fixed_noise: torch.Tensor, path: Path) -> None:
    """5x5 grid from the fixed noise, generator in eval mode (BatchNorm running stats), fp32, atomically."""
    from torchvision.utils import save_image  # torchvision's import is slow; only needed here

    images = generate(generator, fixed_noise)  # (25, 1, 28, 28), eval mode, mode restored
    atomic_write(path, lambda tmp: save_image(images, tmp, format="png", nrow=5, normalize=True, value_range=(-1, 1)))


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
    """Complete rows of losses.csv as dicts (empty when the file is missing); a row torn by a kill is left out."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))

    def complete(row: dict[str, str]) -> bool:
        try:
            int(row["iteration"]), [float(row[k]) for k in CSV_HEADER[2:]]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    return [r for r in rows if complete(r)]


def truncate_csv(path: Path, last_iteration: int) -> None:
    """Keep the rows up to last_iteration (a run killed mid-epoch logged beyond its checkpoint); -1 keeps none."""
    rows = [r for r in read_csv_rows(path) if int(r["iteration"]) <= last_iteration]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_HEADER, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


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

"""Figures of a GAN run folder: one copy of each, for the command line and for task2.ipynb.

    python part2/figures.py RUN_DIR [--out PNG] [--scale 3] [--overwrite]

writes RUN_DIR/grids_over_training.png (or --out): grid_start.png, grid_half.png and grid_end.png, the
5x5 samples my_gan.py draws from one fixed noise batch, side by side, each enlarged pixel for pixel
(--scale times) and titled with the iteration it was drawn at (recorded in the run's config.json; for a
run without those records, the last row of losses.csv). An existing PNG is replaced only with --overwrite.

task2.ipynb draws that figure and the others here: the grids sampled from the saved generators,
the loss curves, and the class histograms of scores.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend switched under a notebook
from matplotlib.ticker import EngFormatter, MaxNLocator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cs324_utils import OneLineParser, UserError, atomic_write, refuse_replacing, run_cli
from file_checks import Fields, read_json
from gan_run import SNAPSHOTS, plot_losses, read_losses

PROG = "figures.py"
FILE = "grids_over_training.png"
STAGE_NAMES = {"start": "start", "half": "halfway", "end": "end"}
DPI = 100
MIN_SCALE, MAX_SCALE = 2, 8  # 28-pixel digits need at least 2x to read
COLLAPSED = 0.3  # a class histogram whose largest share exceeds this is drawn on its own 0-100% axis

# Margins of the grid figures, in pixels: each panel is placed so that one image pixel is `scale` PNG pixels.
GAP, TITLE_BAND, SUPTITLE_BAND = 24, 34, 34


# ----------------------------------------------------------------------------- where each snapshot was taken


def stage_iterations(run_dir: Path) -> dict[str, tuple[int, float | None] | None]:
    """(iteration, epoch or None) at which my_gan.py saved each snapshot, None where the run cannot say.

    my_gan.py records the halfway and last iterations in config.json (half_iteration, total_iterations).
    A folder whose config.json does not record them, or that has none, falls back to the last row of
    losses.csv, which my_gan.py writes at the last iteration, and to my_gan.py's halfway rule.
    A damaged config.json or losses.csv, or a field of the wrong type, is one line naming it.
    """
    path = Path(run_dir) / "config.json"
    config = read_json(path, "config.json") if path.is_file() else Fields({}, path)
    per_epoch = config.int("iterations_per_epoch", 1) if config.has("iterations_per_epoch") else None
    if config.has("total_iterations"):
        end = config.int("total_iterations", 1)
        half = config.int("half_iteration", 1, end)
    else:
        rows = read_losses(Path(run_dir) / "losses.csv")
        if not rows:
            return dict.fromkeys(SNAPSHOTS)
        end = int(float(rows[-1]["iteration"]))
        half = max(end // 2, 1)  # my_gan.py's rule
    return {stage: (it, it / per_epoch if per_epoch else None) for stage, it in zip(SNAPSHOTS, (0, half, end))}


def stage_title(stage: str, when: tuple[int, float | None] | None) -> str:
    """'start (iteration 0)', 'halfway (iteration 93,700, epoch 100)', ..."""
    if when is None:
        return STAGE_NAMES[stage]
    iteration, epoch = when
    epoch_part = f", epoch {epoch:.0f}" if epoch and float(epoch).is_integer() else ""
    return f"{STAGE_NAMES[stage]} (iteration {iteration:,}{epoch_part})"


# ----------------------------------------------------------------------------- grids side by side


def check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise UserError(f"--scale must be an integer from {MIN_SCALE} to {MAX_SCALE}, got {scale!r}")
    return scale


def read_grid(path: Path) -> np.ndarray:
    """A grid PNG as an (H, W) or (H, W, C) array; one line if it is missing or unreadable."""
    from matplotlib.image import imread

    if not path.is_file():
        raise UserError(f"{path} is missing (my_gan.py writes it; a run still training has no grid_end.png yet)")
    try:
        return imread(path)
    except Exception as exc:  # PIL and matplotlib raise several kinds for a file that is not a PNG
        raise UserError(f"{path} is not a readable PNG ({type(exc).__name__})") from None


def grid_panels(images: list[np.ndarray | None], titles: list[str], suptitle: str, scale: int) -> Figure:
    """Images side by side, each enlarged `scale` times by repeating pixels (nearest neighbour) and placed
    so that every image pixel is exactly scale x scale PNG pixels at DPI; None draws an empty panel."""
    check_scale(scale)
    shown = [img for img in images if img is not None]
    h = max((img.shape[0] for img in shown), default=152) * scale
    w = max((img.shape[1] for img in shown), default=152) * scale
    width = len(images) * w + (len(images) + 1) * GAP
    height = h + TITLE_BAND + SUPTITLE_BAND + GAP // 2
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for i, (img, title) in enumerate(zip(images, titles)):
        ax = fig.add_axes((((i + 1) * GAP + i * w) / width, (GAP // 2) / height, w / width, h / height))
        ax.set_axis_off()
        text = ax.set_title(title, fontsize=12)
        room = w + GAP - 6  # a title may reach into the gaps beside its panel, never into its neighbour's title
        if text.get_window_extent().width > room:
            text.set_fontsize(12 * room / text.get_window_extent().width)
        if img is None:
            ax.text(0.5, 0.5, "not written", ha="center", va="center", transform=ax.transAxes, fontsize=12)
            continue
        big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
        ax.imshow(big, cmap="gray" if big.ndim == 2 else None, interpolation="nearest")
    fig.suptitle(suptitle, fontsize=13, y=1 - 8 / height, va="top")
    return fig


def grids_over_training(run_dir: Path, scale: int = 3, allow_missing: bool = False) -> Figure:
    """grid_start/half/end.png of a run side by side, enlarged and titled; a missing grid is an error
    unless allow_missing (then its panel says so)."""
    run_dir = Path(run_dir)
    when = stage_iterations(run_dir)
    images = []
    for stage in SNAPSHOTS:
        path = run_dir / f"grid_{stage}.png"
        images.append(None if allow_missing and not path.is_file() else read_grid(path))
    return grid_panels(images, [stage_title(s, when[s]) for s in SNAPSHOTS],
                       "The same 25 latents (my_gan.py's fixed noise) during training", scale)


def sampled_grids(run_dir: Path, seed: int = 0, scale: int = 2) -> Figure:
    """25 images from each of generator_start/half/end.pt (eval mode, the same seeded latents for all
    three), laid out like grids_over_training; a missing generator leaves its panel empty."""
    from torchvision.utils import make_grid

    from models import load_generator
    from sampling import generate, latents

    run_dir = Path(run_dir)
    when = stage_iterations(run_dir)
    images: list[np.ndarray | None] = []
    for stage in SNAPSHOTS:
        path = run_dir / f"generator_{stage}.pt"
        if not path.is_file():
            images.append(None)
            continue
        generator = load_generator(path)
        samples = generate(generator, latents(25, generator.latent_dim, seed))  # (25, 1, 28, 28) in [-1, 1]
        grid = make_grid(samples, nrow=5, normalize=True, value_range=(-1, 1), pad_value=1)  # (3, H, W)
        images.append(grid.permute(1, 2, 0).numpy())
    suptitle = f"Sampled from generator_{{start,half,end}}.pt: 25 latents of seed {seed}, the same for all three"
    return grid_panels(images, [stage_title(s, when[s]) for s in SNAPSHOTS], suptitle, scale)


# ----------------------------------------------------------------------------- curves and histograms


def loss_curves(run_dir: Path) -> Figure | None:
    """Losses and mean discriminator outputs from losses.csv, with a moving average through the GAN's
    noise on long runs; None when there is no losses.csv."""
    import torch

    rows = read_losses(Path(run_dir) / "losses.csv")
    if not rows:
        return None
    col = {k: torch.tensor([float(r[k]) for r in rows]) for k in rows[0]}
    it = col["iteration"]
    k = max(1, len(rows) // 50)  # moving-average window
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for name, label in (("loss_d", "discriminator"), ("loss_g", "generator")):
        (line,) = ax1.plot(it, col[name], alpha=0.3 if k > 1 else 1.0, label=None if k > 1 else label)
        if k > 1:
            trend = torch.nn.functional.avg_pool1d(col[name][None, None], k, stride=1)[0, 0]
            ax1.plot(it[k - 1:], trend, color=line.get_color(), label=f"{label} (mean of {k} rows)")
    ax1.axhline(float(np.log(2)), color="gray", lw=0.8, ls="--", label="ln 2")
    ax1.set(ylabel="loss", title="losses")
    for name, label in (("d_real", "D(real)"), ("d_fake", "D(G(z))")):
        ax2.plot(it, col[name], label=label)
    ax2.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax2.set(ylim=(0, 1), ylabel="mean sigmoid output", title="discriminator outputs")
    for ax in (ax1, ax2):
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 50k, 100k, ...: no colliding long labels
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=9)
    return fig


def class_histograms(scores: dict) -> Figure:
    """The classifier's class shares of each scored set (a scores.json of evaluate.py), in percent.

    A set that piles onto few classes (the untrained start: one class) gets its own 0-100% panel, so
    that the other sets keep a scale on which their departures from 10% show.
    """
    names = [n for n in scores if n != "meta"]
    colors = {n: f"C{i}" for i, n in enumerate(names)}
    collapsed = [n for n in names if max(scores[n]["class_histogram"]) > COLLAPSED]
    spread = [n for n in names if n not in collapsed]
    groups = [g for g in (collapsed, spread) if g]
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False, width_ratios=[len(g) + 1 for g in groups])[0]
    digits = np.arange(10)
    for ax, group in zip(axes, groups):
        width = 0.8 / len(group)
        for i, name in enumerate(group):
            shares = 100 * np.asarray(scores[name]["class_histogram"], dtype=float)
            bars = ax.bar(digits - 0.4 + (i + 0.5) * width, shares, width, color=colors[name], label=name)
            if group is collapsed:
                ax.bar_label(bars, labels=[f"{v:.0f}%" if v > 100 * COLLAPSED else "" for v in shares], fontsize=9)
        ax.axhline(10, color="gray", lw=0.8, ls="--", label="uniform (10%)")
        ax.set_xticks(digits, [str(d) for d in digits])
        ax.set_xlabel("predicted digit")
        ax.grid(axis="y", alpha=0.3)
        if group is collapsed:
            ax.set(ylim=(0, 112), title="piled on few classes (0-100%)")
        else:
            top = max(100 * max(scores[n]["class_histogram"]) for n in group)
            ax.set(ylim=(0, max(15.0, 1.25 * top)), title="spread over the ten classes")
        ax.legend(fontsize=8, loc="upper left", ncols=len(group) + 1)
    axes[0].set_ylabel("% of samples")
    fig.suptitle("Classes the classifier assigns to the samples")
    return fig


# ----------------------------------------------------------------------------- command line


def write_grids_figure(run_dir: str | Path, out: str | Path | None = None, scale: int = 3,
                       overwrite: bool = False) -> Path:
    """Write grids_over_training(run_dir) as a PNG (default RUN_DIR/grids_over_training.png); return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; give a run folder of my_gan.py")
    check_scale(scale)
    path = Path(out) if out is not None else run_dir / FILE
    if path.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {path}")
    refuse_replacing(path, overwrite)
    fig = grids_over_training(run_dir, scale)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
    return path


def write_losses_figure(run_dir: str | Path, overwrite: bool = False) -> Path:
    """Draw RUN_DIR/losses.png again from RUN_DIR/losses.csv (as my_gan.py draws it at the end of a run)."""
    run_dir = Path(run_dir)
    path = run_dir / "losses.png"
    refuse_replacing(path, overwrite)
    if not read_losses(run_dir / "losses.csv"):
        raise UserError(f"{run_dir / 'losses.csv'} is missing or holds no rows")
    plot_losses(run_dir / "losses.csv", path)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run folder of my_gan.py (holding grid_start.png, grid_half.png, grid_end.png)")
    p.add_argument("--out", default=None, help=f"the PNG to write (default: RUN_DIR/{FILE})")
    p.add_argument("--scale", type=int, default=3,
                   help=f"PNG pixels per grid pixel, {MIN_SCALE} to {MAX_SCALE} (default: 3)")
    p.add_argument("--losses", action="store_true",
                   help="instead, draw RUN_DIR/losses.png again from RUN_DIR/losses.csv")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the PNG if it exists; needed to write into part2/results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.losses:
        path = run_cli(PROG, lambda: write_losses_figure(args.run_dir, args.overwrite))
    else:
        path = run_cli(PROG, lambda: write_grids_figure(args.run_dir, args.out, args.scale, args.overwrite))
    print(f"{PROG}: wrote {path}")


if __name__ == "__main__":
    main()

"""Copy what the notebooks and report need from a my_gan.py run folder into a small, committable one.

    python part2/export_run.py part2/runs/gan200 part2/results/gan

Keeps config.json, grid_{start,half,end}.png, losses.csv/png, scores.json and interpolation PNGs,
a few grids over training (--every), and generator_{start,half,end}.pt re-saved in float16
(load_generator turns them back into float32). The checkpoint (optimisers, 25 MB) is left out.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError
from models import load_generator, save_generator

KEEP = ["config.json", "grid_start.png", "grid_half.png", "grid_end.png", "losses.csv", "losses.png", "scores.json"]


def export_run(run_dir: Path, out_dir: Path, every: int = 25) -> list[str]:
    """Copy the small outputs, every `every`-th grid, and float16 generators; return the names written."""
    if not (run_dir / "generator_end.pt").is_file():
        raise UserError(f"{run_dir} is not a finished my_gan.py run (no generator_end.pt)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in KEEP + [p.name for p in run_dir.glob("interpolation*.png")]:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
            written.append(name)
    grids = sorted((run_dir / "grids").glob("iter_*.png"))
    if grids:
        (out_dir / "grids").mkdir(exist_ok=True)
        for old in (out_dir / "grids").glob("iter_*.png"):
            old.unlink()
        for grid in grids[::every] + grids[-1:]:
            shutil.copy2(grid, out_dir / "grids" / grid.name)
            written.append(f"grids/{grid.name}")
    for stage in ("start", "half", "end"):
        save_generator(load_generator(run_dir / f"generator_{stage}.pt"), out_dir / f"generator_{stage}.pt", half=True)
        written.append(f"generator_{stage}.pt")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a finished run folder of my_gan.py")
    p.add_argument("out_dir", help="folder to write (e.g. part2/results/gan)")
    p.add_argument("--every", type=int, default=25, help="keep every N-th grid of grids/ (default: %(default)s)")
    args = p.parse_args()
    try:
        if args.every < 1:
            raise UserError(f"--every must be >= 1, got {args.every}")
        written = export_run(Path(args.run_dir), Path(args.out_dir), args.every)
    except UserError as err:
        print(f"export_run.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {len(written)} files to {args.out_dir}")


if __name__ == "__main__":
    main()

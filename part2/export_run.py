"""Copy what the notebooks and report need from a my_gan.py run folder into a small, committable one.

    python part2/export_run.py part2/runs/gan200 part2/runs/gan200_export
    python part2/export_run.py part2/runs/gan200 part2/results/gan --overwrite   # replaces the committed export

Keeps config.json, grid_{start,half,end}.png, losses.csv/png, scores.json and interpolation PNGs,
a few grids over training (--every), and generator_{start,half,end}.pt re-saved in float16
(load_generator turns them back into float32). The checkpoint (optimisers, 25 MB) is left out.

The export is built in a hidden folder beside OUT_DIR and renamed into place whole, so a failed or
interrupted export leaves OUT_DIR as it was; an OUT_DIR that holds files is replaced only with --overwrite.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cs324_utils import OneLineParser, UserError, check_out, check_writable_dir, run_cli
from models import Generator, load_generator, save_generator

PROG = "export_run.py"
STAGES = ("start", "half", "end")
KEEP = ["config.json", "grid_start.png", "grid_half.png", "grid_end.png", "losses.csv", "losses.png", "scores.json"]


def check_paths(run_dir: Path, out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work, folders that overlap, an OUT_DIR that is a file or holds files, an unwritable parent."""
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    src, dst = run_dir.resolve(), out_dir.resolve()
    if dst == src or dst.is_relative_to(src) or src.is_relative_to(dst):
        raise UserError(f"OUT_DIR {out_dir} and RUN_DIR {run_dir} overlap; export to a folder outside the run")
    if dst.exists() and not dst.is_dir():
        raise UserError(f"OUT_DIR {out_dir} is a file, not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise UserError(f"OUT_DIR {out_dir} already holds files; add --overwrite to replace it whole, "
                        f"or choose another folder")
    check_writable_dir(dst.parent, "OUT_DIR's parent")


def load_generators(run_dir: Path) -> dict[str, Generator]:
    """The three generators of a finished run, loaded and checked (names, shapes, finite weights: models.py), so a
    bad file stops the export before anything is written."""
    missing = [f"generator_{s}.pt" for s in STAGES if not (run_dir / f"generator_{s}.pt").is_file()]
    if missing:
        raise UserError(f"{run_dir} is not a finished my_gan.py run (no {missing[0]})")
    return {s: load_generator(run_dir / f"generator_{s}.pt") for s in STAGES}


def write_export(run_dir: Path, folder: Path, generators: dict[str, Generator], every: int) -> list[str]:
    """Copy the small outputs, every `every`-th grid and the last, and float16 generators into folder."""
    written = []
    for name in KEEP + sorted(p.name for p in run_dir.glob("interpolation*.png")):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, folder / name)
            written.append(name)
    grids = sorted((run_dir / "grids").glob("iter_*.png"))
    if grids:
        (folder / "grids").mkdir()
        for grid in grids[::every] + grids[-1:]:
            shutil.copy2(grid, folder / "grids" / grid.name)
            written.append(f"grids/{grid.name}")
    for stage, g in generators.items():
        save_generator(g, folder / f"generator_{stage}.pt", half=True)
        written.append(f"generator_{stage}.pt")
    return written


def temp_name(out_dir: Path, kind: str) -> Path:
    return out_dir.with_name(f".{out_dir.name}.{kind}.{os.getpid()}.tmp")


def recover(out_dir: Path) -> None:
    """Tidy what a killed export left beside out_dir: unfinished copies go; a replaced export is removed,
    or put back if the kill came between the two renames of swap_in (out_dir then missing)."""
    for stray in sorted(out_dir.parent.glob(f".{out_dir.name}.new.*.tmp")):
        shutil.rmtree(stray, ignore_errors=True)
    for old in sorted(out_dir.parent.glob(f".{out_dir.name}.old.*.tmp")):
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, out_dir)


def swap_in(new: Path, out_dir: Path) -> None:
    """Put the finished export at out_dir; the previous one is deleted only once the new one is in place."""
    old = temp_name(out_dir, "old") if out_dir.exists() else None
    if old is not None:
        os.rename(out_dir, old)
    try:
        os.rename(new, out_dir)
    except OSError:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # the new export is in place: a leftover is only clutter


def export_run(run_dir: Path, out_dir: Path, every: int = 25, overwrite: bool = False) -> list[str]:
    """Export run_dir into out_dir whole or not at all; return the names written."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if every < 1:
        raise UserError(f"--every must be >= 1, got {every}")
    check_out(out_dir, overwrite=overwrite, flag="OUT_DIR")  # part2/results only when asked; before recover writes
    try:
        recover(out_dir)  # first, so a restored export counts as existing below
    except OSError as exc:
        raise UserError(f"cannot tidy an earlier, interrupted export beside {out_dir}: {exc.strerror or exc}") from None
    check_paths(run_dir, out_dir, overwrite)
    generators = load_generators(run_dir)
    new = temp_name(out_dir, "new")
    try:
        new.mkdir()
        written = write_export(run_dir, new, generators, every)
        swap_in(new, out_dir)
    except OSError as exc:
        raise UserError(f"cannot export to {out_dir}: {exc.strerror or exc}; {out_dir} is as it was") from None
    finally:
        shutil.rmtree(new, ignore_errors=True)  # gone already after a successful swap
    return written


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a finished run folder of my_gan.py")
    p.add_argument("out_dir", help="folder to write (e.g. part2/results/gan)")
    p.add_argument("--every", type=int, default=25, help="keep every N-th grid of grids/ (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an OUT_DIR that already holds files, whole")
    args = p.parse_args(argv)
    written = run_cli(PROG, lambda: export_run(Path(args.run_dir), Path(args.out_dir), args.every, args.overwrite))
    print(f"wrote {len(written)} files to {args.out_dir}")


if __name__ == "__main__":
    main()

"""The learning-rate study: which RMSprop learning rate works at which input length, for each model.

    cd part1 && python lr_study.py --out results/lr_study

The assignment says of Part I, Task 2 that longer sequences may need other settings, "particularly the
learning rate". This runs compare.py's sweep once per learning rate (log-spaced, 1e-4 to 1e-2) at the
template's settings (digits as numbers, the default initialisation: uniform with forget bias 1), each
into <out>/lr<rate>/ with its own table and figures, then draws lr_study.png: per model, a heat map
over learning rate x input length of the steps each run took to reach 99% validation accuracy, and
lr_study.md, its table. --resume keeps the finished sweeps and runs; --overwrite trains afresh.

--reuse RATE=SWEEP takes one rate's runs from a sweep compare.py made at the same settings but without
the stop at 99.5%, perhaps for more steps (the template comparison runs the template's learning rate):
the study reads each run's validations up to its own --max_steps, and from them only the steps to 99%
and the best accuracy, which that stop does not change.

--close MODEL:LENGTH names cells where the seeds leave the answer close: at every rate they also train
--close_seeds (into <out>/lr<rate>/close_<model><length>/, or read from the --reuse sweep).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
import compare
from cs324_utils import OneLineParser, UserError, atomic_write, check_out, run_cli, write_json
from file_checks import Fields, read_json

HERE = Path(__file__).resolve().parent
PROG = "lr_study.py"
RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
SUMMARY = "lr_study.json"


def sweep_args(rate: float, args: argparse.Namespace, cell: tuple[str, int] | None = None) -> list[str]:
    """compare.py's command line for one learning rate: the whole grid, or one --close cell's extra seeds."""
    out = Path(args.out) / f"lr{rate:g}"
    if cell is None:
        grid = ["--lengths", *map(str, args.lengths), "--lstm_lengths", "--seeds", *map(str, args.seeds)]
    else:
        grid = ["--models", cell[0], "--lengths", str(cell[1]), "--lstm_lengths", "--seeds", *map(str, args.close_seeds)]
        out = out / f"close_{cell[0]}{cell[1]}"
    flags = [*grid, "--input_dim", "1", "--lstm_init", "forget_bias", "--forget_bias", "1",
             "--learning_rate", f"{rate:g}", "--max_steps", str(args.max_steps), "--threads", str(args.threads),
             "--out", str(out)]
    return flags + (["--resume"] if args.resume else []) + (["--overwrite"] if args.overwrite else [])


def swept_rows(rate: float, args: argparse.Namespace, cell: tuple[str, int] | None = None) -> list[dict]:
    """Run compare.py's sweep for one rate (or one --close cell at it) and return its runs."""
    flags = sweep_args(rate, args, cell)
    print(f"{PROG}: learning rate {rate:g}: python compare.py {' '.join(flags)}", flush=True)
    sweep = compare.parse_args(flags)
    compare.sweep(sweep, "python compare.py " + " ".join(flags))
    return read_json(Path(sweep.out) / compare.SUMMARY, "sweep summary").list("runs")


def reused_rows(rate: float, sweep: Path, args: argparse.Namespace, close: list[tuple[str, int]]) -> list[dict]:
    """The runs of `sweep` at the study's lengths and seeds (and the --close cells' seeds), checked to be the
    study's settings at `rate`."""
    summary = read_json(sweep / compare.SUMMARY, "sweep summary")
    swept = summary.fields("args")
    wanted = {"learning_rate": rate, "input_dim": 1, "lstm_init": "forget_bias", "forget_bias": 1.0,
              "eval_every": 250}
    for key, value in wanted.items():
        if swept.raw(key, None) != value:
            raise UserError(f"--reuse: {sweep} was swept with {key} {swept.raw(key, None)}, not {value}")
    if swept.int("max_steps", 1) < args.max_steps:
        raise UserError(f"--reuse: {sweep} was swept for {swept.int('max_steps', 1)} steps, fewer than {args.max_steps}")
    runs = {(model, length, seed) for model in compare.MODELS for length in args.lengths for seed in args.seeds}
    runs |= {(model, length, seed) for model, length in close for seed in args.close_seeds}
    rows = [within_budget(r, args.max_steps) for r in summary.records("runs")
            if (r.str("model"), r.int("input_length", 1), r.int("seed", 0)) in runs]
    if len(rows) != len(runs):
        raise UserError(f"--reuse: {sweep} lacks some of the runs at lengths {args.lengths} and seeds {args.seeds}"
                        + (f" (and seeds {args.close_seeds} of {' '.join(args.close)})" if close else ""))
    return rows


def within_budget(run: Fields, max_steps: int) -> dict:
    """A run of a longer sweep as the study's budget sees it: its validations up to max_steps."""
    points = run.list("curve")
    if not all(isinstance(pt, list) and len(pt) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in pt) for pt in points):
        raise run.error("curve", "must be a list of [step, accuracy] pairs (the validation curve is damaged)")
    curve = [(step, acc) for step, acc in points if step <= max_steps]
    if not curve:
        raise run.error("curve", f"has no validation within {max_steps} steps")
    return {**run.obj, "peak_accuracy": max(acc for _, acc in curve),
            "steps_to_99": next((step for step, acc in curve if acc >= 0.99), None)}


def cells(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (model, input length): how many runs reached 99%, their steps to it, and the mean peak accuracy."""
    out: dict[tuple[str, int], dict] = {}
    for r in rows:
        cell = out.setdefault((r["model"], r["input_length"]), {"runs": 0, "steps": [], "peaks": []})
        cell["runs"] += 1
        cell["peaks"].append(r["peak_accuracy"])
        if r["steps_to_99"] is not None:
            cell["steps"].append(r["steps_to_99"])
    return out


def table(summary: dict, max_steps: int) -> str:
    rates = sorted(summary["rates"])
    seeds = ", ".join(map(str, summary["seeds"]))
    if summary["close"]:  # a cell's n/m shows how many seeds it has
        seeds += f"; also {', '.join(map(str, summary['close_seeds']))} in {', '.join(summary['close'])}"
    lines = [f"Command: `{summary['command']}`", "",
             f"Each cell: runs that reached 99% validation accuracy within {max_steps:,} steps, and their steps to "
             "99% (mean ± std); where none did, the best accuracy reached (mean over seeds). Template settings: "
             "digits as numbers, uniform initialisation with forget bias 1, RMSprop, batch 128, hidden 128, "
             f"clipping at 10, validation every 250 steps, a stop at 99.5%. Seeds {seeds}.", ""]
    for model in compare.MODELS:
        lines += [f"**{model.upper()}**", "", "| input length | " + " | ".join(f"lr {r:g}" for r in rates) + " |",
                  "|---:|" + "---:|" * len(rates)]
        for length in summary["lengths"]:
            row = [cell_text(summary["rates"][r].get(f"{model} {length}")) for r in rates]
            lines.append(f"| {length} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def cell_text(cell: dict | None) -> str:
    if cell is None:
        return "—"
    if cell["steps"]:
        spread = statistics.pstdev(cell["steps"]) if len(cell["steps"]) > 1 else 0.0
        return f"{len(cell['steps'])}/{cell['runs']}: {statistics.fmean(cell['steps']):,.0f} ± {spread:,.0f}"
    return f"0/{cell['runs']} (best {statistics.fmean(cell['peaks']):.2f})"


def plot(summary: dict, path: Path, max_steps: int) -> None:
    """Per model, a heat map of the mean steps to 99% (a run that never got there counts as the budget)."""
    from matplotlib.figure import Figure

    rates, lengths = sorted(summary["rates"]), summary["lengths"]
    fig = Figure(figsize=(12, 0.6 * len(lengths) + 2.6))
    axes = fig.subplots(1, 2)
    for ax, model in zip(axes, compare.MODELS):
        grid = []
        for length in lengths:
            row = []
            for rate in rates:
                cell = summary["rates"][rate].get(f"{model} {length}")
                if cell is None:
                    row.append(float("nan"))
                    continue
                missed = cell["runs"] - len(cell["steps"])
                row.append((sum(cell["steps"]) + missed * max_steps) / cell["runs"])
            grid.append(row)
        image = ax.imshow(grid, cmap="viridis_r", vmin=0, vmax=max_steps, aspect="auto")
        for i, length in enumerate(lengths):
            for j, rate in enumerate(rates):
                cell = summary["rates"][rate].get(f"{model} {length}")
                if cell is not None:
                    text = cell_text(cell).replace(": ", "\n").replace(" (", "\n(")
                    ax.text(j, i, text, ha="center", va="center", fontsize=7,
                            color="white" if grid[i][j] > 0.55 * max_steps else "black")
        ax.set(xticks=range(len(rates)), xticklabels=[f"{r:g}" for r in rates], yticks=range(len(lengths)),
               yticklabels=lengths, xlabel="RMSprop learning rate", ylabel="input length",
               title=f"{model.upper()}: steps to 99% validation accuracy")
    fig.colorbar(image, ax=axes, label=f"mean steps to 99% (a run that did not reach it counts {max_steps:,})")
    fig.suptitle("Learning rate against input length (cells: runs reaching 99% / all, steps mean ± std)")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight"))


def study(args: argparse.Namespace, command: str) -> None:
    out = check_out(args.out, args.resume, args.overwrite, "study")
    if sorted(set(args.learning_rates)) != sorted(args.learning_rates) or min(args.learning_rates) <= 0:
        raise UserError("--learning_rates must be distinct positive numbers")
    reuse = parse_reuse(args.reuse)
    close = parse_close(args)
    summary = {"command": command, "lengths": args.lengths, "seeds": args.seeds, "rates": {},
               "close": args.close, "close_seeds": args.close_seeds if close else [],
               "reused": {f"{r:g}": str(d) for r, d in reuse.items()}}
    for rate in sorted({*args.learning_rates, *reuse}):
        if rate in reuse:
            rows = reused_rows(rate, reuse[rate], args, close)
        else:
            rows = swept_rows(rate, args) + [row for cell in close for row in swept_rows(rate, args, cell)]
        summary["rates"][rate] = {f"{m} {length}": c for (m, length), c in cells(rows).items()}
    write_json({**summary, "rates": {f"{r:g}": v for r, v in summary["rates"].items()}}, out / SUMMARY)
    text = table(summary, args.max_steps)
    atomic_write(out / "lr_study.md", lambda tmp: Path(tmp).write_text(text))
    plot(summary, out / "lr_study.png", args.max_steps)
    print("\n" + text)


def parse_reuse(items: list[str]) -> dict[float, Path]:
    out = {}
    for item in items:
        rate, _, folder = item.partition("=")
        try:
            out[float(rate)] = Path(folder)
        except ValueError:
            raise UserError(f"--reuse takes RATE=SWEEP_FOLDER, got {item!r}") from None
        if not folder:
            raise UserError(f"--reuse takes RATE=SWEEP_FOLDER, got {item!r}")
    return out


def parse_close(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The --close cells as (model, input length), checked against the study's grid and seeds."""
    cells = []
    for item in args.close:
        model, _, length = item.partition(":")
        if model not in compare.MODELS or not length.isdigit() or int(length) not in args.lengths:
            raise UserError(f"--close takes MODEL:LENGTH with MODEL lstm or rnn and LENGTH one of --lengths "
                            f"{args.lengths}, got {item!r}")
        cells.append((model, int(length)))
    if len(set(cells)) != len(cells):
        raise UserError("--close lists a cell more than once")
    if cells and (set(args.close_seeds) & set(args.seeds) or len(set(args.close_seeds)) != len(args.close_seeds)):
        raise UserError(f"--close_seeds must be distinct and not among --seeds {args.seeds}, got {args.close_seeds}")
    return cells


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learning_rates", type=float, nargs="+", default=list(RATES),
                   help="RMSprop learning rates to sweep (default: 1e-4 3e-4 1e-3 3e-3 1e-2)")
    p.add_argument("--reuse", nargs="*", default=[], metavar="RATE=SWEEP",
                   help="take a rate's runs from a compare.py sweep at these settings without the stop at 99.5%%")
    p.add_argument("--lengths", type=int, nargs="+", default=[9, 19, 29, 49], help="input lengths (default: 9 19 29 49)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default: 0 1)")
    p.add_argument("--close", nargs="*", default=[], metavar="MODEL:LENGTH",
                   help="cells where the seeds leave the answer close: they also train --close_seeds at every rate")
    p.add_argument("--close_seeds", type=int, nargs="+", default=[2], help="the --close cells' extra seeds (default: 2)")
    p.add_argument("--max_steps", type=int, default=5_000, help="step budget per run (default: 5000)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each run (default: 1)")
    p.add_argument("--out", default=str(HERE / "runs" / "lr_study"), help="folder (default: part1/runs/lr_study)")
    p.add_argument("--resume", action="store_true", help="keep finished sweeps and runs in --out")
    p.add_argument("--overwrite", action="store_true", help="train afresh (and write into the committed results)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python lr_study.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_cli(PROG, lambda: study(args, command))


if __name__ == "__main__":
    main()

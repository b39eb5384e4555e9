"""LSTM against vanilla RNN over palindrome lengths: the headline result of part 1.

Trains both models at each input length for several seeds under the same budget (steps,
learning rate, data, stopping rule), and the LSTM alone at the longer --lstm_lengths (the RNN is
near chance from length 49 on, and a run at 199 would take it most of an hour). Writes compare.md
(table), compare.png (accuracy against length), compare_curves.png (validation accuracy of every
run against steps) and compare.json to --out, one run folder per model, length and seed.
An --out that holds a sweep is continued with --resume (finished runs are kept and skipped,
interrupted ones resume from their checkpoint, and every kept run must have been made with the
settings given now) or trained afresh with --overwrite.

    python compare.py                                  # lengths 4 9 19 29 49 99 (+ LSTM 199), seeds 0 1 2
    python compare.py --lstm_lengths                   # both models at lengths 4-99 only
    python compare.py --lengths 4 9 19 --seeds 0 --max_steps 3000   # a few minutes
    python compare.py --resume                         # continue an interrupted sweep
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
import lstm_kernel
from cs324_utils import (
    OneLineParser,
    TrainingStopped,
    UserError,
    atomic_write,
    check_fits,
    check_out,
    pick_device,
    refuse_existing_run,
    run_cli,
    write_json,
)
from dataset import capped_warning
from file_checks import read_checkpoint, read_json
from palindrome_run import RUN_CONTROL, memory_estimate
from train import Config, train
from training_run import hold_folder

HERE = Path(__file__).resolve().parent
PROG = "compare.py"
MODELS = ("lstm", "rnn")
SUMMARY = "compare.json"
OUTPUTS = (SUMMARY, "compare.md", "compare.png", "compare_curves.png")
# Settings a kept run may have been made with differently: how this invocation runs, and the
# thread count (speed only).
MAY_DIFFER = (*RUN_CONTROL, "threads")


def run_config(model: str, length: int, seed: int, args: argparse.Namespace) -> Config:
    # One setting for every length; only the LSTM has gates whose initialisation matters.
    return Config(
        model=model, input_length=length, seed=seed, input_dim=args.input_dim,
        num_hidden=args.num_hidden, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_norm=args.max_norm, data_size=args.data_size, max_epoch=10**6, max_steps=args.max_steps,
        target_accuracy=args.target_accuracy, eval_every=args.eval_every,
        chrono=args.lstm_init == "chrono", forget_bias=args.forget_bias,
        device=args.device, threads=args.threads, lstm_impl=args.lstm_impl,
        out=str(Path(args.out) / f"{model}_len{length}_seed{seed}"), progress=False,
        overwrite=args.overwrite,
    )


def plan(args: argparse.Namespace) -> list[Config]:
    """Every run of the sweep, validated before the first one trains."""
    check_out(args.out, args.resume, args.overwrite, "sweep")
    for flag, values in (("--lengths", args.lengths + args.lstm_lengths), ("--seeds", args.seeds),
                         ("--models", args.models)):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UserError(f"{flag} lists {repeated[0]} more than once")
    for flag, values in (("--lengths", args.lengths), ("--lstm_lengths", args.lstm_lengths)):
        if values and min(values) < 1:
            raise UserError(f"{flag} must be >= 1, got {min(values)}")
    if args.max_steps < 1:
        raise UserError(f"--max_steps must be >= 1, got {args.max_steps}")
    runs = [(length, model) for length in args.lengths for model in args.models]
    if "lstm" in args.models:
        runs += [(length, "lstm") for length in args.lstm_lengths]
    configs = [run_config(model, length, seed, args).validated(warn=False) for length, model in runs
               for seed in args.seeds]
    if "lstm" in args.models:
        lstm_kernel.check_environment()
    device = pick_device(args.device)
    for config in configs:
        check_fits(*memory_estimate(config), device)
    for length in dict.fromkeys(c.input_length for c in configs):  # one warning a length, once all are valid
        capped = next(c.data_size for c in configs if c.input_length == length)
        if capped < args.data_size:
            print(capped_warning(length, args.data_size, capped), file=sys.stderr)
    return configs


def prepare_out(args: argparse.Namespace, configs: list[Config]) -> None:
    """Refuse to write over an earlier sweep unless --resume or --overwrite says what to do with it."""
    markers = (SUMMARY, *(Path(c.out).name for c in configs))
    refuse_existing_run(args.out, markers, args.resume, args.overwrite)
    if args.overwrite and not args.resume:  # asked for by name: no old summary beside runs trained afresh
        for name in OUTPUTS:
            (Path(args.out) / name).unlink(missing_ok=True)


def kept_run(config: Config) -> tuple[dict | None, Config]:
    """With --resume: the metrics of a finished run made with these settings (None if it must still train),
    and the config to train it with (resuming its checkpoint if it has one).

    A kept run or checkpoint made with other settings is refused: the table would state one budget
    and hold runs of another.
    """
    out = Path(config.out)
    if (out / "metrics.json").is_file():
        metrics = read_json(out / "metrics.json", "--resume: metrics file")
        check_sweep_settings(metrics.fields("config"), config)
        for key in ("val_accuracy", "wall_time_s"):
            metrics.number(key, 0)
        metrics.int("steps", 0)
        metrics.raw("steps_to_99")
        for entry in metrics.records("history"):
            entry.int("step", 0), entry.number("val_accuracy", 0, 1)
        return metrics.obj, config
    if (out / "checkpoint.pt").is_file():
        check_sweep_settings(read_checkpoint(out / "checkpoint.pt", "--resume: checkpoint").fields("config"), config)
        return None, dataclasses.replace(config, resume=True)
    return None, config


def check_sweep_settings(saved, config: Config) -> None:
    """A kept run must have been made with the sweep's settings (all but how and where it ran)."""
    for f in dataclasses.fields(Config):
        if f.name in MAY_DIFFER:
            continue
        # A run recorded before a setting existed used that setting's default.
        if saved.raw(f.name, f.default) != getattr(config, f.name):
            raise UserError(f"--resume: {saved.path} was made with --{f.name} {saved.raw(f.name, f.default)}, not "
                            f"{getattr(config, f.name)}; give the sweep's settings, --overwrite, or another --out")


def run_all(args: argparse.Namespace, configs: list[Config]) -> list[dict]:
    rows = []
    for config in configs:
        metrics, config = kept_run(config) if args.resume else (None, config)
        if metrics is None:
            try:
                metrics = train(config)
            except TrainingStopped as exc:
                raise TrainingStopped(f"{exc} (in {config.model} length {config.input_length} seed {config.seed}; "
                                      f"continue the sweep with the same flags plus --resume)", exc.signum) from None
        print(f"{config.model} length {config.input_length} seed {config.seed}: val_accuracy "
              f"{metrics['val_accuracy']:.4f}, steps to 99% {metrics['steps_to_99']}, {metrics['wall_time_s']:.0f} s",
              flush=True)
        rows.append({"model": config.model, "input_length": config.input_length, "seed": config.seed,
                     "lstm_init": describe_init(config) if config.model == "lstm" else None,
                     "data_size": config.data_size, "val_accuracy": metrics["val_accuracy"],
                     "peak_accuracy": max((h["val_accuracy"] for h in metrics["history"]),
                                          default=metrics["val_accuracy"]),
                     "curve": [[h["step"], h["val_accuracy"]] for h in metrics["history"]], "steps": metrics["steps"],
                     "steps_to_99": metrics["steps_to_99"], "wall_time_s": metrics["wall_time_s"]})
    return rows


def describe_init(config: Config) -> str:
    return "chrono" if config.chrono else f"forget bias {config.forget_bias:g}"


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["input_length"]), []).append(r)
    summary = []
    for (model, length), rs in groups.items():
        reached = [r["steps_to_99"] for r in rs if r["steps_to_99"] is not None]
        acc_mean, acc_std = mean_std([r["val_accuracy"] for r in rs])
        summary.append({"model": model, "input_length": length, "runs": len(rs), "data_size": rs[0]["data_size"],
                        "acc_mean": acc_mean, "acc_std": acc_std, "reached_99": len(reached),
                        "peak_mean": statistics.fmean(r["peak_accuracy"] for r in rs),
                        "steps_to_99": mean_std(reached) if reached else None,
                        "lstm_init": rs[0]["lstm_init"],
                        "time_mean_s": statistics.fmean(r["wall_time_s"] for r in rs)})
    return summary


def table(summary: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"Budget per run: at most {args.max_steps} steps of batch {args.batch_size}, RMSprop lr "
        f"{args.learning_rate}, clipping at {args.max_norm}, hidden {args.num_hidden}, "
        f"{'one-hot digits' if args.input_dim == 10 else 'digits as numbers'} (input_dim {args.input_dim}), "
        f"{args.data_size} palindromes (80% train) or all there are where fewer exist (the palindromes "
        f"column), validation every {args.eval_every} steps, "
        + (f"stop at {args.target_accuracy:.1%} validation accuracy" if args.target_accuracy else "no early stop")
        + ". Peak: the best validation accuracy a run reached; final: where it stopped.",
        "",
        "| model | input length | LSTM gate init | palindromes | final val. accuracy (mean ± std) | peak val. accuracy (mean) "
        "| runs reaching 99% | steps to 99% (mean ± std of those) | mean time per run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(summary, key=lambda s: (s["model"], s["input_length"])):
        steps = f"{s['steps_to_99'][0]:,.0f} ± {s['steps_to_99'][1]:,.0f}" if s["steps_to_99"] else "—"
        lines.append(f"| {s['model'].upper()} | {s['input_length']} | {s['lstm_init'] or '—'} | {s['data_size']:,} "
                     f"| {s['acc_mean']:.4f} ± {s['acc_std']:.4f} | {s['peak_mean']:.4f} "
                     f"| {s['reached_99']}/{s['runs']} | {steps} | {s['time_mean_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], summary: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no backend switched under a notebook

    fig = Figure(figsize=(7, 4.8))
    ax = fig.subplots()
    for model, color in zip(MODELS, ("tab:blue", "tab:red")):
        ss = sorted((s for s in summary if s["model"] == model), key=lambda s: s["input_length"])
        if not ss:
            continue
        ax.errorbar([s["input_length"] for s in ss], [s["acc_mean"] for s in ss], yerr=[s["acc_std"] for s in ss],
                    marker="o", capsize=3, color=color, label=f"{model.upper()} (mean ± std)")
        rs = [r for r in rows if r["model"] == model]
        ax.scatter([r["input_length"] for r in rs], [r["val_accuracy"] for r in rs], color=color, alpha=0.35, s=14)
    ax.axhline(0.1, color="gray", ls=":", lw=1, label="chance (0.1)")
    ax.set(xlabel="input length (digits read)", ylabel="final validation accuracy", ylim=(0, 1.03),
           title="Predicting the last digit of a palindrome")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)  # below the axes, off the data
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def plot_curves(rows: list[dict], path: Path) -> None:
    """Validation accuracy against steps, one panel per input length, every run, one line style per seed:
    the RNN's collapses and the LSTM's plateaus show here, not in the final numbers."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    lengths = sorted({r["input_length"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    styles = dict(zip(seeds, ("-", "--", ":", "-.") * (len(seeds) // 4 + 1)))
    ncols = min(4, len(lengths))
    nrows = -(-len(lengths) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 2.7 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax, length in zip(axes, lengths):
        for model, color in zip(MODELS, ("tab:blue", "tab:red")):
            for r in (r for r in rows if r["input_length"] == length and r["model"] == model):
                steps, acc = zip(*r["curve"]) if r["curve"] else ((), ())
                # Markers: a run that stops at its first validation is a single point.
                ax.plot(steps, acc, color=color, ls=styles[r["seed"]], lw=1.2, alpha=0.85, marker="o", ms=2)
        ax.axhline(0.1, color="gray", ls=":", lw=1)
        ax.set_title(f"input length {length}", fontsize=10)
        ax.set_ylim(0, 1.03)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[len(lengths):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("validation accuracy")
    for ax in axes[(nrows - 1) * ncols:]:
        ax.set_xlabel("training step")
    present = [m for m in MODELS if any(r["model"] == m for r in rows)]
    handles = [Line2D([], [], color=c, lw=2, label=m.upper()) for m, c in zip(MODELS, ("tab:blue", "tab:red"))
               if m in present]
    handles += [Line2D([], [], color="black", ls=styles[s], label=f"seed {s}") for s in seeds]
    handles.append(Line2D([], [], color="gray", ls=":", label="chance (0.1)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle("Validation accuracy of every run against training steps")
    fig.tight_layout(rect=(0, 0.6 / (2.7 * nrows + 0.6), 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Config()
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4, 9, 19, 29, 49, 99], help="input lengths (default: 4 9 19 29 49 99)")
    p.add_argument("--lstm_lengths", type=int, nargs="*", default=[199],
                   help="longer input lengths at which only the LSTM trains (default: 199; "
                        "give the flag alone for none)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="models (default: lstm rnn)")
    p.add_argument("--max_steps", type=int, default=10_000, help="step budget per run (default: 10000)")
    p.add_argument("--target_accuracy", type=float, default=0.995, help="stop a run at this validation accuracy (default: 0.995)")
    p.add_argument("--eval_every", type=int, default=250, help="validate every N steps (default: 250)")
    p.add_argument("--learning_rate", type=float, default=d.learning_rate, help=f"(default: {d.learning_rate})")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help=f"(default: {d.batch_size})")
    p.add_argument("--num_hidden", type=int, default=d.num_hidden, help=f"(default: {d.num_hidden})")
    p.add_argument("--input_dim", type=int, default=10, help="1 (digit as a number) or 10 (one-hot) (default: 10)")
    p.add_argument("--max_norm", type=float, default=d.max_norm, help=f"(default: {d.max_norm})")
    p.add_argument("--data_size", type=int, default=d.data_size, help=f"(default: {d.data_size})")
    p.add_argument("--lstm_init", default="chrono", choices=["chrono", "forget_bias"],
                   help="LSTM gate biases: chrono, or uniform with --forget_bias added (default: chrono)")
    p.add_argument("--forget_bias", type=float, default=d.forget_bias, help=f"with --lstm_init forget_bias (default: {d.forget_bias})")
    p.add_argument("--lstm_impl", default=d.lstm_impl, choices=["fast", "reference"],
                   help="as train.py --lstm_impl: by default (fast) lstm_bptt.py, a second implementation of the "
                        "same arithmetic with CPU kernels, runs the LSTM; reference runs LSTM.recurrence under "
                        "plain autograd (default: fast)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads of each run (default: 0, the cores idle when it starts)")
    p.add_argument("--out", default=str(HERE / "runs" / "compare"), help="folder for runs and results (default: part1/runs/compare)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: keep its finished runs, resume interrupted ones")
    p.add_argument("--overwrite", action="store_true",
                   help="train every run afresh in an --out that holds a sweep; with --resume, continue a sweep in "
                        "the committed part1/results (nothing is written there without --overwrite)")
    return p.parse_args(argv)


def sweep(args: argparse.Namespace, command: str) -> None:
    configs = plan(args)
    with hold_folder(args.out, PROG):  # a second sweep on this folder is refused while this one runs
        prepare_out(args, configs)
        rows = run_all(args, configs)
        write_outputs(args, command, rows)


def write_outputs(args: argparse.Namespace, command: str, rows: list[dict]) -> None:
    summary = summarise(rows)
    out = Path(args.out)
    write_json({"command": command, "args": vars(args), "runs": rows, "summary": summary}, out / SUMMARY)
    text = table(summary, args, command.strip())
    atomic_write(out / "compare.md", lambda tmp: Path(tmp).write_text(text))
    plot(rows, summary, out / "compare.png")
    plot_curves(rows, out / "compare_curves.png")
    print("\n" + text + f"\nwritten to {out}/compare.md, compare.png, compare_curves.png, compare.json")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_cli(PROG, lambda: sweep(args, command))


if __name__ == "__main__":
    main()

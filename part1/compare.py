"""LSTM against vanilla RNN over palindrome lengths: the headline result of part 1.

Trains both models at each input length for several seeds under the same budget (steps,
learning rate, data, stopping rule), then writes compare.md (table), compare.png
(accuracy against length) and compare.json to --out. Finished runs are kept and skipped
when the command is run again, so an interrupted sweep picks up where it stopped.

    python compare.py                                  # lengths 4 9 19 29 49 99, seeds 0 1 2
    python compare.py --lengths 4 9 19 --seeds 0 --max_steps 3000   # a few minutes
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from train import Config, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError, atomic_write, write_json

HERE = Path(__file__).resolve().parent

MODELS = ("lstm", "rnn")


def run_config(model: str, length: int, seed: int, args: argparse.Namespace) -> Config:
    # One setting for every length; only the LSTM has gates whose initialisation matters.
    return Config(
        model=model, input_length=length, seed=seed, input_dim=args.input_dim,
        num_hidden=args.num_hidden, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_norm=args.max_norm, data_size=args.data_size, max_epoch=10**6, max_steps=args.max_steps,
        target_accuracy=args.target_accuracy, eval_every=args.eval_every,
        chrono=args.lstm_init == "chrono", forget_bias=args.forget_bias,
        device=args.device, out=str(Path(args.out) / f"{model}_len{length}_seed{seed}"), progress=False,
    )


def run_all(args: argparse.Namespace) -> list[dict]:
    rows = []
    for length in args.lengths:
        for model in args.models:
            for seed in args.seeds:
                config = run_config(model, length, seed, args)
                metrics_path = Path(config.out) / "metrics.json"
                if metrics_path.is_file() and not args.rerun:
                    metrics = json.loads(metrics_path.read_text())
                else:
                    config.resume = (Path(config.out) / "checkpoint.pt").is_file() and not args.rerun
                    metrics = train(config)
                print(f"{model} length {length} seed {seed}: val_accuracy {metrics['val_accuracy']:.4f}, "
                      f"steps to 99% {metrics['steps_to_99']}, {metrics['wall_time_s']:.0f} s", flush=True)
                rows.append({"model": model, "input_length": length, "seed": seed,
                             "lstm_init": describe_init(config) if model == "lstm" else None,
                             "val_accuracy": metrics["val_accuracy"], "steps": metrics["steps"],
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
        summary.append({"model": model, "input_length": length, "runs": len(rs),
                        "acc_mean": acc_mean, "acc_std": acc_std, "reached_99": len(reached),
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
        f"{args.data_size} palindromes (80% train), validation every "
        f"{args.eval_every} steps, stop at {args.target_accuracy:.1%} validation accuracy.",
        "",
        "| model | input length | LSTM gate init | final val. accuracy (mean ± std) | runs reaching 99% | steps to 99% (mean ± std of those) | mean time per run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sorted(summary, key=lambda s: (s["model"], s["input_length"])):
        steps = f"{s['steps_to_99'][0]:,.0f} ± {s['steps_to_99'][1]:,.0f}" if s["steps_to_99"] else "—"
        lines.append(f"| {s['model'].upper()} | {s['input_length']} | {s['lstm_init'] or '—'} | {s['acc_mean']:.4f} ± {s['acc_std']:.4f} "
                     f"| {s['reached_99']}/{s['runs']} | {steps} | {s['time_mean_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], summary: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no backend switched under a notebook

    fig = Figure(figsize=(7, 4.2))
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
    ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def main() -> None:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4, 9, 19, 29, 49, 99], help="input lengths (default: 4 9 19 29 49 99)")
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
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--out", default=str(HERE / "runs" / "compare"), help="folder for runs and results (default: part1/runs/compare)")
    p.add_argument("--rerun", action="store_true", help="train again even where a finished run exists")
    args = p.parse_args()
    command = "python compare.py " + " ".join(sys.argv[1:])
    try:
        if args.max_steps < 1 or min(args.lengths) < 1:
            raise UserError("--max_steps and --lengths must be >= 1")
        rows = run_all(args)
    except UserError as exc:
        print(f"compare.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    summary = summarise(rows)
    out = Path(args.out)
    write_json({"command": command, "args": vars(args), "runs": rows, "summary": summary}, out / "compare.json")
    text = table(summary, args, command.strip())
    atomic_write(out / "compare.md", lambda tmp: Path(tmp).write_text(text))
    plot(rows, summary, out / "compare.png")
    print("\n" + text + f"\nwritten to {out}/compare.md, compare.png, compare.json")


if __name__ == "__main__":
    main()

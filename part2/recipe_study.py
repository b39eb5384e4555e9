"""The four stabilisers measured with seeds: all four, each one left out, none; and dropout levels.

    python part2/recipe_study.py --data_dir ../shared/mnist --n_epochs 30 --out /tmp/recipe_study

Trains my_gan.py once per setting and seed into --runs (each in a process of its own, --jobs at a
time with one thread each), scores each run's generator_{half,end}.pt with evaluate.py (FID and
Inception Score on the repository's classifier, the class histogram), and writes recipe_study.json,
recipe_study.md (mean ± std over the seeds) and recipe_study.png to --out, with each run's
losses.csv, config.json and scores.json in <out>/<setting>_seed<s>/ (its checkpoint and generators
stay in --runs). The learning-rate decay spans --n_epochs, so a shorter run keeps the schedule's
shape. Running the study again keeps finished runs and resumes stopped ones. --redraw draws
recipe_study.png again from recipe_study.json in --out, without training.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cs324_utils import OneLineParser, UserError, atomic_write, check_out, refuse_replacing, run_cli, write_json
from evaluate import score_run
from file_checks import read_json

HERE = Path(__file__).resolve().parent
PROG = "recipe_study.py"
# setting -> my_gan.py flags; "all four" is my_gan.py's defaults, "none" the template's plain recipe.
SETTINGS = {
    "all four": [],
    "no dropout": ["--d_dropout", "0"],
    "no label smoothing": ["--label_smoothing", "0"],
    "no weight average": ["--ema", "0"],
    "no lr decay": ["--lr_decay", "none"],
    "none": ["--d_dropout", "0", "--label_smoothing", "0", "--ema", "0", "--lr_decay", "none"],
    "dropout 0.2": ["--d_dropout", "0.2"],
    "dropout 0.3": ["--d_dropout", "0.3"],
}
METRICS = ("fid", "inception_score", "kl_from_uniform", "min_class", "max_class", "confident_fraction")


def folder(out: Path, setting: str, seed: int) -> Path:
    return out / f"{setting.replace(' ', '_')}_seed{seed}"


def train_one(setting: str, seed: int, args: argparse.Namespace) -> str:
    """my_gan.py for one setting and seed, in its own process; resumed where a checkpoint is left."""
    run = folder(Path(args.runs), setting, seed)
    if (run / "generator_end.pt").is_file():
        return f"{run.name}: kept"
    flags = [*SETTINGS[setting], "--n_epochs", str(args.n_epochs), "--seed", str(seed), "--data_dir", args.data_dir,
             "--out", str(run), "--threads", "1", "--precision", args.precision, "--device", "cpu"]
    if not args.download:
        flags.append("--no_download")
    if (run / "checkpoint.pt").is_file():
        flags.append("--resume")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / "my_gan.py"), *flags], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{run.name} failed ({last}); run the study again to resume it")
    return f"{run.name}: trained in {time.perf_counter() - t0:.0f} s"


def scores_of(run: Path, args: argparse.Namespace) -> dict:
    """The run's scores.json, made (10,000 samples per generator) if it is not there yet."""
    if not (run / "scores.json").is_file():
        score_run(run, args.data_dir, download=args.download, n_samples=args.n_samples)
    scores = read_json(run / "scores.json", "scores file")
    out = {}
    for stage in ("half", "end"):
        s = scores.fields(stage)
        histogram = [float(v) for v in s.list("class_histogram")]
        out[stage] = {"fid": s.number("fid", 0), "inception_score": s.number("inception_score", 0),
                      "kl_from_uniform": s.number("kl_from_uniform", 0), "min_class": min(histogram),
                      "max_class": max(histogram), "confident_fraction": s.number("confident_fraction", 0, 1)}
    return out


def mean_std(values: list[float]) -> list[float]:
    return [statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0]


def summarise(per_run: dict[str, dict[int, dict]]) -> dict:
    return {setting: {stage: {m: mean_std([runs[s][stage][m] for s in runs]) for m in METRICS}
                      for stage in ("half", "end")} for setting, runs in per_run.items()}


def table(summary: dict, args: argparse.Namespace, command: str) -> str:
    digits = {"fid": 1, "inception_score": 2, "kl_from_uniform": 3, "confident_fraction": 3}

    def cell(metric: str, mean_and_std: list[float]) -> str:
        mean, std = (f"{v:.{digits[metric]}f}" for v in mean_and_std)
        return mean if len(args.seeds) == 1 else f"{mean} ± {std}"  # one seed has no spread to show

    lines = [f"Command: `{command}`", "",
             f"{args.n_epochs} epochs per run (the learning-rate decay spans them), "
             + (f"seed {args.seeds[0]}: one run per setting, an observation. " if len(args.seeds) == 1 else
                f"seeds {', '.join(map(str, args.seeds))}; each cell mean ± std over the seeds (population std). ")
             + "Scores on "
             f"{args.n_samples:,} samples with the repository's classifier; classes: the rarest and the most "
             "frequent digit's share of the samples, mean over the seeds.", "",
             "| setting | FID half | FID end | IS half | IS end | KL(classes ‖ uniform) end | classes end (%) "
             "| confident end |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for setting, s in summary.items():
        h, e = s["half"], s["end"]
        lines.append(f"| {setting} | {cell('fid', h['fid'])} | {cell('fid', e['fid'])} "
                     f"| {cell('inception_score', h['inception_score'])} | {cell('inception_score', e['inception_score'])} "
                     f"| {cell('kl_from_uniform', e['kl_from_uniform'])} "
                     f"| {100 * e['min_class'][0]:.1f}–{100 * e['max_class'][0]:.1f} "
                     f"| {cell('confident_fraction', e['confident_fraction'])} |")
    return "\n".join(lines) + "\n"


def plot(per_run: dict[str, dict[int, dict]], path: Path) -> None:
    """FID and IS at the end per setting: every seed as a dot, the mean ± std beside them."""
    from matplotlib.figure import Figure

    settings = list(per_run)
    fig = Figure(figsize=(12, 4.4))
    axes = fig.subplots(1, 2)
    for ax, metric, label in ((axes[0], "fid", "FID at the end (lower is better)"),
                              (axes[1], "inception_score", "Inception Score at the end (higher is better)")):
        for i, setting in enumerate(settings):  # no bars: their baseline would hide differences of tenths
            values = [r["end"][metric] for r in per_run[setting].values()]
            if len(values) > 1:
                mean, std = mean_std(values)
                ax.errorbar(i + 0.12, mean, yerr=std, fmt="s", ms=7, capsize=5,
                            color="tab:gray" if setting == "none" else "tab:blue")
            ax.plot([i - 0.12 * (len(values) > 1)] * len(values), values, "o", color="black", ms=4)
        ax.set_xticks(range(len(settings)), settings, rotation=30, ha="right")
        ax.set(ylabel=label, xlim=(-0.6, len(settings) - 0.4))
        ax.grid(alpha=0.3, axis="y")
    one_seed = all(len(runs) == 1 for runs in per_run.values())
    fig.suptitle("FID and IS of each setting at the end of training " + (
        "(one seed each: an observation, its spread not measured)" if one_seed
        else "(dots: each seed; squares: mean ± std over seeds)"))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def study(args: argparse.Namespace, command: str) -> None:
    out = check_out(args.out, overwrite=args.overwrite)
    runs = check_out(args.runs, flag="--runs")
    unknown = sorted(set(args.settings) - set(SETTINGS))
    if unknown:
        raise UserError(f"--settings: no setting {unknown[0]!r} (choose from {', '.join(SETTINGS)})")
    if args.n_epochs < 1 or args.jobs < 1 or not args.seeds:
        raise UserError("--n_epochs and --jobs must be >= 1, and --seeds must name at least one seed")
    for name in ("recipe_study.json", "recipe_study.md", "recipe_study.png"):
        refuse_replacing(out / name, args.overwrite)
    jobs = [(s, seed) for seed in args.seeds for s in args.settings]
    with ThreadPoolExecutor(args.jobs) as pool:  # each job is a process of its own: threads only wait on it
        for line in pool.map(lambda job: train_one(*job, args), jobs):
            print(f"{PROG}: {line}", flush=True)
    per_run = {s: {seed: scores_of(folder(runs, s, seed), args) for seed in args.seeds} for s in args.settings}
    for s in args.settings:  # what the report reads of each run: its losses, settings and scores
        for seed in args.seeds:
            for name in ("losses.csv", "config.json", "scores.json"):
                data = (folder(runs, s, seed) / name).read_bytes()
                atomic_write(folder(out, s, seed) / name, lambda tmp, data=data: Path(tmp).write_bytes(data))
    summary = summarise(per_run)
    write_json({"command": command, "n_epochs": args.n_epochs, "seeds": args.seeds,
                "settings": {s: SETTINGS[s] for s in args.settings}, "runs": {s: {str(k): v for k, v in r.items()}
                                                                       for s, r in per_run.items()},
                "summary": summary}, out / "recipe_study.json")
    text = table(summary, args, command)
    atomic_write(out / "recipe_study.md", lambda tmp: Path(tmp).write_text(text))
    plot(per_run, out / "recipe_study.png")
    print("\n" + text)


def redraw(args: argparse.Namespace) -> None:
    """recipe_study.png drawn again from the recipe_study.json in --out, without training or scoring."""
    out = check_out(args.out, overwrite=args.overwrite)
    refuse_replacing(out / "recipe_study.png", args.overwrite)
    runs = read_json(out / "recipe_study.json", "study summary").fields("runs")
    per_run = {}
    for setting in runs.obj:
        seeds = runs.fields(setting)
        per_run[setting] = {seed: {"end": {metric: seeds.fields(seed).fields("end").number(metric, 0)
                                           for metric in ("fid", "inception_score")}} for seed in seeds.obj}
    if not per_run or not all(per_run.values()):
        raise UserError(f"{out / 'recipe_study.json'}: runs must name at least one setting, each with its seeds")
    plot(per_run, out / "recipe_study.png")
    print(f"recipe_study.png drawn again in {out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), help="settings to train (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--n_epochs", type=int, default=30, help="epochs per run (default: 30)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default: 2)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="of every run (default: bf16)")
    p.add_argument("--n_samples", type=int, default=10_000, help="samples scored per generator (default: 10000)")
    p.add_argument("--data_dir", default=str(HERE / "data"), help="MNIST root (default: part2/data)")
    p.add_argument("--no_download", dest="download", action="store_false", help="never download MNIST")
    p.add_argument("--runs", default=str(HERE / "runs" / "recipe_study"),
                   help="where the runs train (default: part2/runs/recipe_study)")
    p.add_argument("--out", default=str(HERE / "runs" / "recipe_study"),
                   help="folder for the summary and each run's losses, settings and scores (default: part2/runs/recipe_study)")
    p.add_argument("--overwrite", action="store_true", help="replace the summary (needed inside the committed part2/results)")
    p.add_argument("--redraw", action="store_true", help="draw recipe_study.png again from --out, without training")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python part2/recipe_study.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    run_cli(PROG, lambda: redraw(args) if args.redraw else study(args, command))


if __name__ == "__main__":
    main()

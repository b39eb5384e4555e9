"""Why the vanilla RNN fails, read from its training: the collapses after near-perfect accuracy, and the
long plateaus at 0.2 and 0.4.

    cd part1 && python rnn_failures.py --out results/rnn_failures

Each case is a run of compare.py's sweep (one-hot digits, hidden 128, batch 128, RMSprop, clipping at
10, validation every 250 steps), trained again exactly as train.py trains it (a test checks the two
agree step for step), with a record at every step of what the update saw:

    loss        the batch's cross-entropy
    grad_norm   the gradient's norm before clipping (clipping scales it down to --max_norm above that)
    step_max    the largest change of one weight in the RMSprop update
    rms_min     the smallest sqrt(v) + eps of any weight: RMSprop divides each gradient by it, where v
                is the running mean of that weight's squared gradients (decay alpha = 0.99)

and at every validation the confusion matrix (how often the network answers each digit for each true
last digit, which equals the first; rnn_plateaus.png shows it where a run sits on a plateau) and two sizes of the recurrent matrix W_hh: its spectral norm (the
most one step can stretch a vector) and its spectral radius (the rate at which its powers grow or
shrink). Collapses are trained again with a smaller learning rate and with
tighter clipping, to see which of them prevents the fall.

Writes rnn_failures.json (settings, command, validation histories, confusion matrices), one CSV of the
per-step record per case (steps.<case>.csv), rnn_collapses.png and rnn_plateaus.png to --out. Files
that exist are replaced only with --overwrite. --redraw draws the two figures again from those files.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cpu_threads import machine_line, set_threads
from cs324_utils import (
    OneLineParser,
    TrainingFailed,
    UserError,
    atomic_write,
    check_out,
    check_writable_dir,
    refuse_replacing,
    run_cli,
    write_json,
)
from dataset import PalindromeDataset
from file_checks import Fields, read_csv, read_json
from train import Config, build_model

HERE = Path(__file__).resolve().parent
PROG = "rnn_failures.py"
JSON, COLLAPSES_PNG, PLATEAUS_PNG = "rnn_failures.json", "rnn_collapses.png", "rnn_plateaus.png"
EVAL_EVERY = 250
FIELDS = ("step", "loss", "grad_norm", "step_max", "rms_min")
# (name, input length, seed, steps, changes to the sweep's settings): the sweep's runs that collapsed,
# each again with a smaller learning rate and with tighter clipping; and two that sat on a plateau.
CASES = (
    ("len29_seed2", 29, 2, 10_000, {}),
    ("len29_seed2_lr3e-4", 29, 2, 10_000, {"learning_rate": 3e-4}),
    ("len29_seed2_clip1", 29, 2, 10_000, {"max_norm": 1.0}),
    ("len29_seed0", 29, 0, 10_000, {}),
    ("len29_seed0_lr3e-4", 29, 0, 10_000, {"learning_rate": 3e-4}),
    ("len29_seed0_clip1", 29, 0, 10_000, {"max_norm": 1.0}),
    ("len49_seed0", 49, 0, 10_000, {}),
    ("len19_seed2", 19, 2, 10_000, {}),
)
# (case, step): validations on a plateau, whose confusion matrices rnn_plateaus.png shows.
PLATEAUS = (("len19_seed2", 2500), ("len29_seed2", 10_000), ("len49_seed0", 10_000), ("len29_seed0_clip1", 10_000))


def case_config(length: int, seed: int, steps: int, changes: dict, args: argparse.Namespace) -> Config:
    """compare.py's settings for one RNN run (its defaults), with the case's changes."""
    return Config(model="rnn", input_length=length, seed=seed, input_dim=10, max_epoch=10**6, max_steps=steps,
                  eval_every=EVAL_EVERY, threads=args.threads, out=str(args.out), progress=False,
                  **changes).validated(warn=False)


# ----------------------------------------------------------------------------- one run, recorded


def instrumented_step(model: nn.Module, optimizer: torch.optim.RMSprop, x: torch.Tensor, y: torch.Tensor,
                      max_norm: float) -> dict[str, float]:
    """train.train_step's update, the same arithmetic, with what it saw recorded."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    step_max = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))
    eps = optimizer.param_groups[0]["eps"]
    rms_min = min(float(optimizer.state[p]["square_avg"].sqrt().min()) + eps for p in model.parameters())
    return {"loss": loss.item(), "grad_norm": float(grad_norm), "step_max": step_max, "rms_min": rms_min}


@torch.no_grad()
def confusion(model: nn.Module, data: PalindromeDataset, indices: torch.Tensor) -> torch.Tensor:
    """(10, 10) counts: row = the true last digit, column = the network's answer."""
    model.eval()
    matrix = torch.zeros(10, 10, dtype=torch.long)
    for idx in indices.split(2048):
        x, y = data.batch(idx)
        matrix += torch.bincount(y * 10 + model(x).argmax(1), minlength=100).view(10, 10)
    model.train()
    return matrix


@torch.no_grad()
def recurrent_sizes(model: nn.Module) -> dict[str, float]:
    """The spectral norm and spectral radius of W_hh."""
    W = model.W_hh.detach().double()
    return {"W_hh_norm": float(torch.linalg.matrix_norm(W, 2)), "W_hh_radius": float(torch.linalg.eigvals(W).abs().max())}


def run_case(config: Config) -> tuple[list[dict], list[dict]]:
    """Train as train.py does; returns (the per-step record, the validations with their confusion matrices)."""
    torch.manual_seed(config.seed)
    data = PalindromeDataset(config.input_length, config.data_size, one_hot=True, seed=config.seed)
    train_idx, val_idx = data.split(config.portion_train)
    model = build_model(config)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=config.learning_rate)
    shuffle = torch.Generator().manual_seed(config.seed)
    steps, validations, step = [], [], 0
    while step < config.max_steps:
        for batch in torch.randperm(len(train_idx), generator=shuffle).split(config.batch_size):
            x, y = data.batch(train_idx[batch])
            record = instrumented_step(model, optimizer, x, y, config.max_norm)
            step += 1
            steps.append({"step": step, **record})
            if not all(v == v for v in record.values()):
                raise TrainingFailed(f"the RNN diverged at step {step}; nothing was written")
            if step % config.eval_every == 0 or step == config.max_steps:
                matrix = confusion(model, data, val_idx)
                validations.append({"step": step, "val_accuracy": matrix.trace().item() / matrix.sum().item(),
                                    "confusion": matrix.tolist(), **recurrent_sizes(model)})
            if step == config.max_steps:
                break
    return steps, validations


def initial_sizes(config: Config) -> dict[str, float]:
    """recurrent_sizes of the RNN as train.py initialises it (seeded, then built)."""
    torch.manual_seed(config.seed)
    return recurrent_sizes(build_model(config))


# ----------------------------------------------------------------------------- figures


def plot_collapses(result: dict, steps: dict[str, list[dict]], path: Path) -> None:
    """Per collapsing run: validation accuracy, loss, gradient norm, and RMSprop's largest step and
    smallest denominator, each against the training step, with its smaller-rate and tighter-clip twins."""
    from matplotlib.figure import Figure

    groups = [name for name, *_ in CASES if name.count("_") == 1 and f"{name}_clip1" in result["cases"]]
    fig = Figure(figsize=(6.2 * len(groups), 11))
    axes = fig.subplots(5, len(groups), sharex="col", squeeze=False)
    styles = {"": ("tab:red", "lr 1e-3, clip 10 (the sweep)"), "_lr3e-4": ("tab:green", "lr 3e-4"),
              "_clip1": ("tab:purple", "clip 1")}
    for col, group in enumerate(groups):
        for suffix, (color, label) in styles.items():
            name = group + suffix
            val = result["cases"][name]["validations"]
            rows = steps[name]
            xs = [r["step"] for r in rows]
            axes[0, col].plot([v["step"] for v in val], [v["val_accuracy"] for v in val], color=color,
                              marker="o", ms=2, label=label)
            for row, key in enumerate(FIELDS[1:], start=1):
                axes[row, col].plot(xs, smooth([r[key] for r in rows]), color=color, lw=0.8, alpha=0.85)
        axes[0, col].set_title(f"RNN, input length {result['cases'][group]['input_length']}, "
                               f"seed {result['cases'][group]['seed']}")
        axes[0, col].legend(fontsize=8, loc="upper left")
        axes[2, col].axhline(10.0, color="gray", ls=":", lw=1)
    labels = ("validation accuracy", "batch loss", "gradient norm\nbefore clipping",
              "largest weight change\nin one update", "smallest RMSprop\ndenominator sqrt(v)+eps")
    for row, label in enumerate(labels):
        axes[row, 0].set_ylabel(label)
        for ax in axes[row]:
            ax.grid(alpha=0.3)
            if row:
                ax.set_yscale("log")
    for ax in axes[-1]:
        ax.set_xlabel("training step (curves: mean over 25 steps)")
    fig.suptitle("The RNN's collapses: what each update saw")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def smooth(values: list[float], width: int = 25) -> list[float]:
    """Mean over the last `width` steps: the per-step record is noisy."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - width] if i >= width else 0.0)
        out.append(total / min(i + 1, width))
    return out


def plateaus(result: dict) -> dict[str, dict]:
    """PLATEAUS found in this result: the accuracy there, the confusion matrix, and the digit answered most
    often for each first digit (the groups the network still tells apart)."""
    out = {}
    for name, step in PLATEAUS:
        validations = result["cases"].get(name, {}).get("validations", [])
        # at the plateau's step, or at the end of a run shorter than that (--steps)
        v = next((v for v in validations if v["step"] >= step), validations[-1] if validations else None)
        if v is not None:
            step = v["step"]
            answers = [max(range(10), key=lambda a, row=row: row[a]) for row in v["confusion"]]
            out[f"{name} step {step}"] = {"case": name, "step": step, "val_accuracy": v["val_accuracy"],
                                          "answers": answers, "confusion": v["confusion"]}
    return out


def plot_plateaus(result: dict, path: Path) -> None:
    """The confusion matrices of the validations on a plateau, as row fractions."""
    from matplotlib.figure import Figure

    found = result["plateaus"]
    fig = Figure(figsize=(4.4 * len(found), 4.6))
    axes = fig.subplots(1, len(found), squeeze=False)[0]
    for ax, plateau in zip(axes, found.values()):
        matrix = torch.tensor(plateau["confusion"], dtype=torch.float)
        shares = matrix / matrix.sum(1, keepdim=True).clamp(min=1)
        ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
        case = result["cases"][plateau["case"]]
        ax.set(xticks=range(10), yticks=range(10), xlabel="the network's answer", ylabel="true last (= first) digit",
               title=f"length {case['input_length']}, seed {case['seed']}, lr {case['learning_rate']:g}, clip "
                     f"{case['max_norm']:g}\nstep {plateau['step']:,}: accuracy {plateau['val_accuracy']:.3f}")
        ax.title.set_fontsize(9)
    fig.suptitle("The RNN on a plateau: which digit it answers for each first digit (row fractions)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # room for the title above the panels' two-line titles
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight"))


# ----------------------------------------------------------------------------- the script


def run(args: argparse.Namespace, command: str) -> dict:
    out = check_out(args.out, overwrite=args.overwrite)
    cases = [c for c in CASES if not args.cases or c[0] in args.cases]
    unknown = sorted(set(args.cases) - {c[0] for c in CASES})
    if unknown:
        raise UserError(f"--cases: no case {unknown[0]!r} (choose from {', '.join(c[0] for c in CASES)})")
    configs = {name: case_config(length, seed, args.steps or steps, changes, args)
               for name, length, seed, steps, changes in cases}
    for name in (JSON, COLLAPSES_PNG, PLATEAUS_PNG, *(f"steps.{n}.csv" for n in configs)):
        refuse_replacing(out / name, args.overwrite)
    check_writable_dir(out)
    set_threads(args.threads)
    start, result, steps = time.perf_counter(), {"cases": {}, "plateaus": {}}, {}
    for name, config in configs.items():
        t0 = time.perf_counter()
        steps[name], validations = run_case(config)
        best = max(validations, key=lambda v: v["val_accuracy"])
        print(f"{name}: peak {best['val_accuracy']:.4f} at step {best['step']}, final "
              f"{validations[-1]['val_accuracy']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        result["cases"][name] = {
            "input_length": config.input_length, "seed": config.seed, "learning_rate": config.learning_rate,
            "max_norm": config.max_norm, "initial": initial_sizes(config),
            "validations": validations}
        write_steps(steps[name], out / f"steps.{name}.csv")
    result["plateaus"] = plateaus(result)
    result.update(command=command, machine=machine_line(), threads=torch.get_num_threads(),
                  settings={n: {k: v for k, v in dataclasses.asdict(c).items() if k not in ("out", "progress")}
                            for n, c in configs.items()},
                  wall_time_s=round(time.perf_counter() - start, 1))
    write_json(result, out / JSON)
    draw(result, steps, out)
    print(f"written to {out}")
    return result


def draw(result: dict, steps: dict[str, list[dict]], out: Path) -> None:
    """The figures a result has the cases for: the collapses with their twins, the plateaus found."""
    if any(name.endswith("_clip1") for name in result["cases"]):
        plot_collapses(result, steps, out / COLLAPSES_PNG)
    if result["plateaus"]:
        plot_plateaus(result, out / PLATEAUS_PNG)


def redraw(args: argparse.Namespace) -> None:
    """The two figures drawn again from the files a run wrote in --out, without training."""
    out = check_out(args.out, overwrite=args.overwrite)
    for name in (COLLAPSES_PNG, PLATEAUS_PNG):
        refuse_replacing(out / name, args.overwrite)
    cases = read_json(out / JSON, "rnn_failures summary").fields("cases")
    result, steps = {"cases": {}}, {}
    for name in cases.obj:
        case = cases.fields(name)
        result["cases"][name] = {
            "input_length": case.int("input_length", 2), "seed": case.int("seed", 0),
            "learning_rate": case.number("learning_rate", 0), "max_norm": case.number("max_norm", 0),
            "validations": [{"step": v.int("step", 1), "val_accuracy": v.number("val_accuracy", 0, 1),
                             "confusion": confusion_matrix(v)} for v in case.records("validations")]}
        rows = read_csv(out / f"steps.{name}.csv", FIELDS)
        if not rows:
            raise UserError(f"{out / f'steps.{name}.csv'} is missing or empty")
        steps[name] = [{"step": int(float(r["step"])), **{k: float(r[k]) for k in FIELDS[1:]}} for r in rows]
    result["plateaus"] = plateaus(result)
    draw(result, steps, out)
    print(f"figures drawn again in {out}")


def confusion_matrix(validation: Fields) -> list[list[int]]:
    matrix = validation.list("confusion")
    if len(matrix) != 10 or any(not isinstance(row, list) or len(row) != 10 or
                                any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in row)
                                for row in matrix):
        raise validation.error("confusion", "must be 10 rows of 10 counts")
    return matrix


def write_steps(rows: list[dict], path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FIELDS)
            writer.writerows([r["step"], *(f"{r[k]:.4g}" for k in FIELDS[1:])] for r in rows)
    atomic_write(path, write)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="*", default=[], help="only these cases (default: all)")
    p.add_argument("--steps", type=int, default=0, help="steps of every case (default: 0, each case's own)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    p.add_argument("--out", default=str(HERE / "runs" / "rnn_failures"),
                   help="folder for the results (default: part1/runs/rnn_failures)")
    p.add_argument("--overwrite", action="store_true", help="replace the files in --out")
    p.add_argument("--redraw", action="store_true",
                   help="draw the two figures again from the files in --out, without training")
    args = p.parse_args(argv)
    if args.steps < 0:
        p.error(f"--steps must be >= 0, got {args.steps}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python rnn_failures.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_cli(PROG, lambda: redraw(args) if args.redraw else run(args, command))


if __name__ == "__main__":
    main()

"""Why the RNN forgets the first digit and the LSTM does not: ||dL/dx_t|| against the step t.

Trains an RNN and an LSTM at one input length with the sweep's settings (compare.py: one-hot
digits, hidden 128, batch 128, RMSprop lr 1e-3, clipping at 10, LSTM chrono initialisation)
and measures, before and after training, how strongly the loss responds to the digit read at
each step: the norm of dL/dx_t, where L is one palindrome's cross-entropy and x_t its t-th
one-hot digit, averaged over a fixed batch of validation palindromes. The last digit must equal
the first, so a model that solves the task needs a gradient at t = 1 that has not vanished.

    python grad_norms.py --out results/grad_norms                 # length 49, 3000 steps each
    python grad_norms.py --input_length 19 --steps 1000 --out /tmp/gn

Writes grad_norms.json (the norms, accuracies, settings, command, machine, wall time) and
grad_norms.png to --out, and nothing else: the training runs live in a temporary folder that is
deleted at the end. Files that exist are replaced only with --overwrite.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
import lstm_kernel
from cpu_threads import machine_line, set_threads
from cs324_utils import (
    OneLineParser,
    TrainingFailed,
    TrainingStopped,
    UserError,
    atomic_write,
    check_fits,
    check_out,
    check_writable_dir,
    pick_device,
    refuse_replacing,
    run_cli,
    set_seed,
    write_json,
)
from dataset import PalindromeDataset
from file_checks import read_checkpoint
from palindrome_run import CHECKPOINT, RUN_CONTROL, memory_estimate
from train import Config, build_model, train

HERE = Path(__file__).resolve().parent
PROG = "grad_norms.py"
JSON, PNG = "grad_norms.json", "grad_norms.png"
MODELS = ("rnn", "lstm")
STATES = ("untrained", "trained")
COLORS = {"rnn": "tab:red", "lstm": "tab:blue"}  # as in compare.png


# ----------------------------------------------------------------------------- settings


def run_config(model: str, args: argparse.Namespace, out: Path) -> Config:
    """The settings of compare.py's sweep for one model, trained for exactly --steps steps."""
    return Config(model=model, input_length=args.input_length, input_dim=10, num_hidden=args.num_hidden,
                  batch_size=args.batch_size, max_epoch=10**6, max_steps=args.steps, chrono=True,
                  seed=args.seed, device=args.device, threads=args.threads, lstm_impl=args.lstm_impl,
                  out=str(out / model), progress=False)


def check_args(args: argparse.Namespace) -> torch.device:
    """Refuse impossible flags and results that would be replaced, before any training; returns the device."""
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.probe_size < 1:
        raise UserError(f"--probe_size must be >= 1, got {args.probe_size}")
    configs = [run_config(m, args, Path(tempfile.gettempdir())).validated(warn=False) for m in MODELS]
    lstm_kernel.check_environment()  # a bad CS324_LSTM_* value stops here, not after the RNN has trained
    device = pick_device(args.device)
    for config in configs:
        check_fits(*memory_estimate(config), device)
    out = check_out(args.out, overwrite=args.overwrite)
    for name in (JSON, PNG):
        refuse_replacing(out / name, args.overwrite)
    check_writable_dir(out)
    return device


# ----------------------------------------------------------------------------- the measurement


def probe_batch(config: Config, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size` validation palindromes of the run's data (same seed and split as train.py)."""
    data = PalindromeDataset(config.input_length, config.data_size, one_hot=True, seed=config.seed)
    _, val_idx = data.split(config.portion_train)
    x, y = data.batch(val_idx[:size])                   # (N, T, 10) one-hot float, (N,)
    return x.to(device), y.to(device)


def input_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """dL_n/dx_n (N, T, D) for each palindrome n, L_n its own cross-entropy; the accuracy and mean loss on x.

    The losses are summed, not averaged: samples do not interact, so each sample's slice of the
    gradient is then exactly the gradient of its own loss, whatever the batch size.
    """
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)                                   # (N, 10)
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    accuracy = (logits.argmax(1) == y).float().mean().item()
    return grad, accuracy, loss.item() / len(y)


def mean_norms(grad: torch.Tensor) -> list[float]:
    """||dL/dx_t|| over the input dimension, averaged over the batch: one number per step t."""
    norms = grad.norm(dim=2).mean(0)                    # (T,)
    if not torch.isfinite(norms).all():
        raise TrainingFailed("the input gradient is not finite; nothing was written")
    return norms.tolist()


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The norms at every step, accuracy and mean loss on the probe batch, and ||dL/dx_1|| / ||dL/dx_T||."""
    grad, accuracy, loss = input_grads(model, x, y)
    norms = mean_norms(grad)
    # A saturated tanh can give an exact 0 at the last step; the ratio is then undefined (None).
    ratio = norms[0] / norms[-1] if norms[-1] > 0 else None
    return {"norms": norms, "probe_accuracy": accuracy, "probe_loss": loss, "first_over_last": ratio}


def trained_model(config: Config, device: torch.device) -> tuple[nn.Module, dict]:
    """Train as train.py does, then load the weights it saved; returns the model and train()'s metrics."""
    try:
        metrics = train(config)
    except TrainingStopped as exc:
        raise TrainingStopped("stopped; nothing was written", exc.signum) from None
    model = build_model(config).to(device)
    model.load_state_dict(read_checkpoint(Path(config.out) / CHECKPOINT).state_dict("model", model))
    return model, metrics


def initial_model(config: Config, device: torch.device) -> nn.Module:
    """The weights train() starts from: train.setup seeds, then builds the model (the data draws
    from its own generator, so nothing in between touches the global RNG)."""
    set_seed(config.seed)
    return build_model(config).to(device)


def measure_model(config: Config, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """Norms of the model as train() initialises it, then after training."""
    untrained = measure(initial_model(config, device), x, y)
    model, metrics = trained_model(config, device)
    trained = measure(model, x, y)
    trained.update({key: metrics[key] for key in ("val_accuracy", "steps", "steps_to_99")},
                   train_wall_time_s=metrics["wall_time_s"])
    ratios = [f"{r:.3g}" if r is not None else "undefined" for r in (untrained["first_over_last"],
                                                                     trained["first_over_last"])]
    print(f"{config.model}: ||dL/dx_1|| / ||dL/dx_T|| {ratios[0]} untrained, {ratios[1]} trained "
          f"(val_accuracy {metrics['val_accuracy']:.4f})", flush=True)
    return {"untrained": untrained, "trained": trained}


# ----------------------------------------------------------------------------- the figure


def plot(result: dict, path: Path) -> None:
    """Left: the norms as measured. Right: each curve over its own value at t = T, which takes out the
    size of the loss (near 0 for a trained model that is right, so all its gradients are small)."""
    from matplotlib.figure import Figure  # no pyplot: no backend switched under a notebook

    T = result["input_length"]
    fig = Figure(figsize=(12, 4.6))
    ax_abs, ax_rel = fig.subplots(1, 2)
    steps = range(1, T + 1)
    for model in MODELS:
        for state in STATES:
            run = result["models"][model][state]
            label = f"{model.upper()}, untrained (loss {run['probe_loss']:.2g})"
            if state == "trained":
                label = (f"{model.upper()}, trained {run['steps']:,} steps (loss {run['probe_loss']:.2g}, "
                         f"val. accuracy {run['val_accuracy']:.3f})")
            style = {"color": COLORS[model], "ls": "--" if state == "untrained" else "-",
                     "lw": 1.5 if state == "untrained" else 2, "label": label}
            ax_abs.plot(steps, run["norms"], **style)
            if run["norms"][-1] > 0:
                ax_rel.plot(steps, [n / run["norms"][-1] for n in run["norms"]], **style)
    ax_abs.set(ylabel=r"$\|\partial L / \partial x_t\|$ (mean over palindromes)", title="as measured")
    ax_rel.set(ylabel=r"$\|\partial L / \partial x_t\|$ / $\|\partial L / \partial x_T\|$",
               title=f"relative to the last digit read (t = {T})")
    for ax in (ax_abs, ax_rel):
        ax.set_yscale("log")
        ax.set(xlabel="position t of the digit read (1 = the first digit, which the last must equal)", xlim=(1, T))
        ax.grid(alpha=0.3, which="major")
    ax_rel.legend(fontsize=9, loc="lower right")
    fig.suptitle(f"Gradient of the loss with respect to each input digit, input length {T}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


# ----------------------------------------------------------------------------- the script


def run(args: argparse.Namespace, command: str) -> dict:
    """Measure both models before and after training; write grad_norms.json and grad_norms.png."""
    start = time.perf_counter()
    device = check_args(args)
    set_threads(args.threads)
    models, configs = {}, {}
    with tempfile.TemporaryDirectory(prefix="grad_norms_runs_") as scratch:  # checkpoints: never committed
        for model in MODELS:
            config = run_config(model, args, Path(scratch)).validated(warn=False)
            x, y = probe_batch(config, args.probe_size, device)
            models[model] = measure_model(config, x, y, device)
            configs[model] = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_CONTROL}
    result = {
        "command": command, "machine": machine_line(), "device": str(device), "threads": torch.get_num_threads(),
        "input_length": args.input_length,
        "measure": "norms[t-1] = mean over the probe palindromes of ||dL/dx_t||_2, L = that palindrome's "
                   "cross-entropy, x_t its t-th one-hot digit (t = 1: the first digit read)",
        "probe": f"the first {len(y)} palindromes of the validation set",
        "models": models, "config": configs,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    out = Path(args.out)
    plot(result, out / PNG)
    write_json(result, out / JSON)
    print(f"written to {out / JSON} and {out / PNG}")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Config()
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_length", type=int, default=49, help="digits the models read (default: 49)")
    p.add_argument("--steps", type=int, default=3000, help="training steps of each model (default: 3000)")
    p.add_argument("--probe_size", type=int, default=1000,
                   help="validation palindromes the norms are averaged over, at most all of them (default: 1000)")
    p.add_argument("--num_hidden", type=int, default=d.num_hidden, help=f"hidden units (default: {d.num_hidden})")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help=f"training batch (default: {d.batch_size})")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and batch order (default: 0)")
    p.add_argument("--lstm_impl", default=d.lstm_impl, choices=["fast", "reference"],
                   help="as train.py --lstm_impl; both give the input gradient (default: fast)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (default: 0, the cores idle at start)")
    p.add_argument("--out", default=str(HERE / "results" / "grad_norms"),
                   help="folder for grad_norms.json and grad_norms.png (default: part1/results/grad_norms)")
    p.add_argument("--overwrite", action="store_true", help="replace grad_norms.json and grad_norms.png in --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python grad_norms.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run_cli(PROG, lambda: run(args, command))


if __name__ == "__main__":
    main()

"""Train the LSTM or the vanilla RNN to predict the last digit of a palindrome.

    python train.py --input_length 20                 # LSTM, defaults below
    python train.py --model rnn --input_length 9
    python train.py --input_length 99 --input_dim 10 --target_accuracy 0.995

Writes metrics.json (config, per-evaluation history, final val_accuracy, steps, wall time),
curves.png and checkpoint.pt (for --resume) to --out. A folder that already holds a run is
continued with --resume or started afresh with --overwrite, never silently written over.
Ctrl-C finishes the current step, saves the checkpoint and exits with code 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import lstm_kernel
from dataset import PalindromeDataset, capped_size
from lstm import LSTM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import (
    OneLineParser,
    TrainingFailed,
    TrainingStopped,
    UserError,
    all_finite,
    atomic_save,
    atomic_write,
    check_fits,
    check_resume_or_overwrite,
    check_seed,
    check_threads,
    check_writable_dir,
    pick_device,
    refuse_existing_run,
    remove_stray_tmp,
    run_cli,
    safe_load,
    set_seed,
    set_threads,
    stop_on_sigint,
    write_json,
)
from vanilla_rnn import VanillaRNN

HERE = Path(__file__).resolve().parent
PROG = "train.py"
CHECKPOINT, METRICS, CURVES = "checkpoint.pt", "metrics.json", "curves.png"
EVAL_BATCH = 2048  # validation samples per forward pass (no gradients kept)


@dataclass
class Config:
    """Every setting of a run: parse_args builds it from the command line; compare.py and notebooks directly."""

    model: str = "lstm"
    input_length: int = 19
    input_dim: int = 1
    num_classes: int = 10
    num_hidden: int = 128
    batch_size: int = 128
    learning_rate: float = 1e-3
    max_epoch: int = 20
    max_norm: float = 10.0
    data_size: int = 100_000
    portion_train: float = 0.8
    forget_bias: float = 1.0
    chrono: bool = False
    max_steps: int = 0
    target_accuracy: float = 0.0
    eval_every: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0: the cores idle at start-up (cs324_utils.set_threads)
    lstm_impl: str = "fast"
    out: str = ""
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def validate(self, warn: bool = True) -> "Config":
        """Refuse impossible settings before any work, naming the flag; cap --data_size (warn: say so)."""
        for ok, message in self._checks():
            if not ok:
                raise UserError(message)
        check_resume_or_overwrite(self.resume, self.overwrite)
        check_seed(self.seed)
        check_threads(self.threads)
        cap = capped_size(self.input_length, self.data_size)
        if cap < self.data_size:
            # Capped, as in the course template. An epoch over the few palindromes of a short length
            # is a few steps (7 at length 5), too few to learn in --max_epoch of them: without a
            # --max_steps, the run keeps the steps that --data_size would have given, in more epochs.
            note = ""
            if not self.max_steps:
                steps = self.max_epoch * self.steps_per_epoch(self.data_size)
                self.max_epoch = math.ceil(steps / self.steps_per_epoch(cap))
                note = f", in {self.max_epoch} epochs: about the {steps} steps of --max_epoch over --data_size"
            if warn:
                print(f"warning: --data_size {self.data_size} exceeds the {cap} distinct palindromes of "
                      f"length {self.input_length + 1}; using {cap}{note}", file=sys.stderr)
            self.data_size = cap
        n_train = int(self.data_size * self.portion_train)
        if n_train < 1 or self.data_size - n_train < 1:
            raise UserError(f"--data_size {self.data_size} is too small to split into training and "
                            f"validation sets with --portion_train {self.portion_train}")
        if not self.out:
            self.out = str(HERE / "runs" / f"{self.model}_len{self.input_length}_seed{self.seed}")
        return self

    def steps_per_epoch(self, data_size: int) -> int:
        return math.ceil(int(data_size * self.portion_train) / self.batch_size)

    def check_memory(self, device: torch.device) -> None:
        """Refuse sizes whose tensors cannot fit where they will live (the GPU's memory on CUDA)."""
        nbytes, what = memory_estimate(self)
        check_fits(nbytes, what, device)

    def _checks(self) -> list[tuple[bool, str]]:
        finite = math.isfinite
        return [
            (self.model in ("lstm", "rnn"), f"--model must be lstm or rnn, got {self.model!r}"),
            (self.input_length >= 1, f"--input_length must be >= 1, got {self.input_length}"),
            (self.input_dim in (1, 10), f"--input_dim must be 1 (digit as a number) or 10 (one-hot), got {self.input_dim}"),
            (self.num_classes == 10, f"--num_classes must be 10 (the digits 0-9), got {self.num_classes}"),
            (self.num_hidden >= 1, f"--num_hidden must be >= 1, got {self.num_hidden}"),
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (finite(self.learning_rate) and self.learning_rate > 0,
             f"--learning_rate must be a finite number > 0, got {self.learning_rate}"),
            (self.max_epoch >= 1, f"--max_epoch must be >= 1, got {self.max_epoch}"),
            (finite(self.max_norm) and self.max_norm > 0, f"--max_norm must be a finite number > 0, got {self.max_norm}"),
            (self.data_size >= 2, f"--data_size must be >= 2 (one training and one validation palindrome), "
                                  f"got {self.data_size}"),
            (0 < self.portion_train < 1, f"--portion_train must be in (0, 1), got {self.portion_train}"),
            (finite(self.forget_bias), f"--forget_bias must be a finite number, got {self.forget_bias}"),
            (self.max_steps >= 0, f"--max_steps must be >= 0 (0: no limit), got {self.max_steps}"),
            (0 <= self.target_accuracy <= 1, f"--target_accuracy must be in [0, 1] (0: off), got {self.target_accuracy}"),
            (self.eval_every >= 0, f"--eval_every must be >= 0 (0: once an epoch), got {self.eval_every}"),
            (self.lstm_impl in ("fast", "reference"), f"--lstm_impl must be fast or reference, got {self.lstm_impl!r}"),
        ]


# How each Config field may differ between a checkpoint and the run that resumes it. Every field
# is in exactly one group (a test checks this), so a new field needs a decision here.
# The problem, the model, the optimiser and the data: a different value would be a different run.
RESUME_MUST_MATCH = ("model", "input_length", "input_dim", "num_classes", "num_hidden", "batch_size",
                     "learning_rate", "max_norm", "data_size", "portion_train", "forget_bias", "chrono", "seed")
# Stopping rules, validation schedule and where/how the numbers run: honoured, and recorded in
# metrics.json's "resumes" with the step from which they applied.
RESUME_MAY_CHANGE = ("max_epoch", "max_steps", "target_accuracy", "eval_every", "device", "threads", "lstm_impl")
# How this invocation runs, not what it trains.
RUN_CONTROL = ("out", "resume", "overwrite", "progress")


class TrainingInterrupted(TrainingStopped):
    """Ctrl-C during training: the checkpoint has been saved; the CLI exits 130."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved to {checkpoint}; "
                         f"continue with the same flags plus --resume")
        self.step, self.checkpoint = step, checkpoint


def memory_estimate(config: Config) -> tuple[float, str]:
    """Rough bytes a run needs (within a factor of about 2) and the flags of its largest part.

    Only sizes that cannot fit are refused, so the estimate errs low rather than high.
    """
    T, D, H, C = config.input_length, config.input_dim, config.num_hidden, config.num_classes
    gates = 4 * H if config.model == "lstm" else H
    n_params = gates * (D + H + 1) + C * (H + 1)
    # Backward keeps each step's gate activations, c, h and tanh(c), and builds their gradients.
    per_sample_step = D + 3 * gates + 4 * H
    n_val = config.data_size - int(config.data_size * config.portion_train)
    parts = [
        (4 * 4 * n_params, f"--num_hidden {H} (weights, gradients, RMSprop state, clipping)"),
        (4 * config.batch_size * T * per_sample_step,
         f"--batch_size {config.batch_size} x --input_length {T} x --num_hidden {H} (activations kept for backward)"),
        (4 * min(n_val, EVAL_BATCH) * T * (D + gates + 3 * H),
         f"--input_length {T} x --num_hidden {H} (validation batches of {EVAL_BATCH})"),
        (3 * 8 * config.data_size * (T + 1), f"--data_size {config.data_size} x --input_length {T} (the palindromes)"),
    ]
    return sum(n for n, _ in parts), max(parts)[1]


def build_model(config: Config) -> nn.Module:
    args = (config.input_length, config.input_dim, config.num_hidden, config.num_classes)
    if config.model == "lstm":
        return LSTM(*args, forget_bias=config.forget_bias, chrono=config.chrono,
                    hand_bptt=config.lstm_impl == "fast")
    return VanillaRNN(*args)


def lstm_layers(config: Config, device: torch.device, decide: bool = False) -> dict | None:
    """Which fast-path layers (C cell, oneDNN matmul or their PyTorch fallbacks) this process uses,
    for an LSTM on the fast path on the CPU; decide: make the training steps' choices now."""
    if config.model != "lstm" or config.lstm_impl != "fast" or device.type != "cpu":
        return None
    if decide:
        return lstm_kernel.describe(config.batch_size, config.num_hidden, device)
    return lstm_kernel.describe()


@dataclass
class Run:
    """What a run carries from step to step; a checkpoint is this, saved."""

    config: Config
    device: torch.device
    data: PalindromeDataset
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator  # batch order, independent of the model's initialisation
    steps_per_epoch: int
    total: int  # the step budget
    eval_every: int
    title: str
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch already taken
    epoch_shuffle_state: torch.Tensor | None = None  # shuffle's state before this epoch's order was drawn
    # (a checkpoint taken mid-epoch saves that state, so a resumed run redraws the same order)
    step: int = 0
    history: list[dict] = field(default_factory=list)
    window: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "count": 0.0})
    resumes: list[dict] = field(default_factory=list)
    start: float = 0.0  # perf_counter() at which the run's clock reads 0
    threads_why: str = ""  # how the thread count was chosen (cs324_utils.set_threads)

    @property
    def ckpt_path(self) -> Path:
        return Path(self.config.out) / CHECKPOINT


# ----------------------------------------------------------------------------- set up


def prepare_out(config: Config) -> dict | None:
    """Make --out ready for this run before any training; returns the checkpoint to resume from."""
    out = Path(config.out)
    if config.resume:
        ckpt = load_checkpoint(out / CHECKPOINT, config)
        for path in remove_stray_tmp(out):
            print(f"{PROG}: removed {path.name}, left by a write that was cut short", file=sys.stderr)
        check_writable_dir(out)
        return ckpt
    refuse_existing_run(out, (METRICS, CHECKPOINT), config.resume, config.overwrite)
    check_writable_dir(out)
    return None


def clear_earlier_run(config: Config) -> None:
    """--overwrite, once the new run is built: nothing of the earlier run may be mistaken for this one's."""
    out = Path(config.out)
    for name in (CHECKPOINT, METRICS, CURVES):
        (out / name).unlink(missing_ok=True)
    remove_stray_tmp(out)


def load_checkpoint(path: Path, config: Config) -> dict:
    """The checkpoint of the run --resume continues, checked against the settings given now."""
    ckpt = safe_load(path, "--resume: checkpoint")
    keys = ("model", "optimizer", "shuffle_state", "batch_in_epoch", "epoch", "step", "history", "window",
            "elapsed", "config", "resumes")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise UserError(f"--resume: {path} is not a checkpoint of this train.py (no {missing[0]!r})")
    saved = ckpt["config"]
    defaults = Config()
    for key in RESUME_MUST_MATCH:
        if saved.get(key, getattr(defaults, key)) != getattr(config, key):
            raise UserError(f"--resume: {path} was made with --{key} {saved.get(key)}, not {getattr(config, key)}; "
                            f"resume with the same value, or start afresh with --overwrite")
    return ckpt


def setup(config: Config) -> Run:
    """Validate, then build data, model, optimiser and batch order, restored from a checkpoint on --resume."""
    config.validate()
    if config.model == "lstm":
        lstm_kernel.check_environment()  # a bad CS324_LSTM_* value stops the run here, not at the first step
    device = pick_device(config.device)
    config.check_memory(device)
    ckpt = prepare_out(config)
    threads_why = set_threads(config.threads)[1]

    set_seed(config.seed)
    data = PalindromeDataset(config.input_length, config.data_size, one_hot=config.input_dim == 10,
                             seed=config.seed).to(device)
    train_idx, val_idx = data.split(config.portion_train)
    model = build_model(config).to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=config.learning_rate)
    shuffle = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = config.steps_per_epoch(config.data_size)
    total = config.max_epoch * steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    run = Run(config, device, data, train_idx, val_idx, model, optimizer, shuffle, steps_per_epoch, total,
              eval_every=config.eval_every or steps_per_epoch,
              title=f"{config.model.upper()}, input length {config.input_length}, seed {config.seed}",
              threads_why=threads_why)
    if ckpt is not None:
        restore(run, ckpt)
    elif config.overwrite:
        clear_earlier_run(config)
    run.start = time.perf_counter() - (ckpt["elapsed"] if ckpt is not None else 0.0)
    return run


def restore(run: Run, ckpt: dict) -> None:
    """Put a checkpoint's state into run; the budget may have grown, never below the steps already taken."""
    if run.total < ckpt["step"]:
        raise UserError(f"--resume: the run is already at step {ckpt['step']}, beyond the budget of {run.total} "
                        f"steps that --max_epoch {run.config.max_epoch} and --max_steps {run.config.max_steps} give")
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.shuffle.set_state(ckpt["shuffle_state"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--resume: {run.ckpt_path} does not fit this model ({type(exc).__name__})") from None
    run.history, run.window, run.resumes = ckpt["history"], ckpt["window"], ckpt["resumes"]
    run.epoch, run.batch_in_epoch, run.step = ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]
    saved, defaults = ckpt["config"], Config()
    changed = {k: [saved.get(k, getattr(defaults, k)), getattr(run.config, k)] for k in RESUME_MAY_CHANGE
               if saved.get(k, getattr(defaults, k)) != getattr(run.config, k)}
    run.resumes.append({"step": run.step, "changed": changed})


def describe_run(run: Run) -> str:
    """The run's first line: what trains, where, on which layers, and where its results go."""
    config = run.config
    threads = torch.get_num_threads()
    parts = [f"{PROG}: {run.title}", f"{run.device}, {threads} thread{'s' * (threads != 1)} ({run.threads_why})"]
    if config.model == "lstm":
        layers = lstm_layers(config, run.device, decide=True) or {}
        chosen = ("C cell with its own products" if layers.get("matmul") == "c"
                  else ", ".join(f"{k} {v}" for k, v in layers.items() if isinstance(v, str)))  # cell torch, matmul mm
        impl = "LSTM fast path" if config.lstm_impl == "fast" else "LSTM reference (autograd)"
        parts.append(impl + (f" ({chosen})" if chosen else ""))
    if config.resume:
        changed = run.resumes[-1]["changed"]
        parts.append(f"resuming at step {run.step}" + "".join(f", --{k} {new} (was {old})"
                                                              for k, (old, new) in changed.items()))
    return "; ".join(parts) + f"; writing to {config.out}"


# ----------------------------------------------------------------------------- one step, evaluation


def next_epoch_batches(run: Run) -> tuple[torch.Tensor, ...]:
    """This epoch's batches of training indices; a run resumed mid-epoch redraws the same order."""
    run.epoch_shuffle_state = run.shuffle.get_state()
    return torch.randperm(len(run.train_idx), generator=run.shuffle).split(run.config.batch_size)


def train_step(run: Run, batch: torch.Tensor) -> None:
    """One RMSprop update on the given training samples, with the gradient norm clipped."""
    x, y = run.data.batch(run.train_idx[batch])  # (B, T, D), (B,)
    logits = run.model(x)                         # (B, 10)
    loss = F.cross_entropy(logits, y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(run.model.parameters(), run.config.max_norm)
    run.optimizer.step()
    run.step += 1
    run.batch_in_epoch += 1
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise TrainingFailed(f"training diverged at step {run.step} (non-finite loss); try a lower --learning_rate")
    run.window["loss"] += loss_value * len(y)
    run.window["correct"] += (logits.argmax(1) == y).sum().item()
    run.window["count"] += len(y)


@torch.no_grad()
def evaluate(model: nn.Module, data: PalindromeDataset, indices: torch.Tensor,
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the given samples."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for idx in indices.split(batch_size):
        x, y = data.batch(idx)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train()
    return loss_sum / len(indices), correct / len(indices)


def record(run: Run) -> dict:
    """Validate now, log the training means since the last record, and reset them."""
    val_loss, val_acc = evaluate(run.model, run.data, run.val_idx)
    n = max(run.window["count"], 1)  # 0 only when a resumed run takes no step
    run.history.append({"epoch": round(run.step / run.steps_per_epoch, 4), "step": run.step,
                        "train_loss": run.window["loss"] / n, "train_accuracy": run.window["correct"] / n,
                        "val_loss": val_loss, "val_accuracy": val_acc,
                        "time": round(time.perf_counter() - run.start, 2)})
    run.window = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    if not math.isfinite(val_loss):
        raise TrainingFailed(f"training diverged at step {run.step} (non-finite loss); try a lower --learning_rate")
    return run.history[-1]


def log(run: Run, entry: dict, bar: tqdm) -> None:
    bar.set_postfix(loss=f"{entry['train_loss']:.3f}", val_acc=f"{entry['val_accuracy']:.4f}")
    if not run.config.progress:  # a log line instead, for runs in the background
        print(f"{run.title}: step {run.step}, val_accuracy {entry['val_accuracy']:.4f}", flush=True)


def finished(run: Run) -> bool:
    target = run.config.target_accuracy
    reached = bool(target) and bool(run.history) and run.history[-1]["val_accuracy"] >= target
    return run.step >= run.total or reached


# ----------------------------------------------------------------------------- checkpoint, finish


def save_checkpoint(run: Run) -> None:
    """Everything --resume needs, written atomically; a non-finite model is never saved."""
    state = run.model.state_dict()
    if not all_finite(state):
        raise TrainingFailed(f"training diverged by step {run.step} (non-finite weights); {run.ckpt_path} keeps the "
                        f"last good state; try a lower --learning_rate")
    mid_epoch = run.batch_in_epoch > 0
    atomic_save({"model": state, "optimizer": run.optimizer.state_dict(),
                "shuffle_state": run.epoch_shuffle_state if mid_epoch else run.shuffle.get_state(),
                "batch_in_epoch": run.batch_in_epoch, "epoch": run.epoch, "step": run.step,
                "history": run.history, "window": run.window, "resumes": run.resumes,
                "elapsed": time.perf_counter() - run.start, "config": dataclasses.asdict(run.config)},
               run.ckpt_path)


def finish(run: Run) -> dict:
    """Final evaluation (if the last step had none), metrics.json and curves.png."""
    if not run.history or run.history[-1]["step"] != run.step:  # stopped between evaluations
        record(run)
    history = run.history
    metrics = {
        "config": dataclasses.asdict(run.config),
        "command": " ".join(sys.argv),
        "device": str(run.device),
        "threads": torch.get_num_threads(),
        "val_accuracy": history[-1]["val_accuracy"],
        "val_loss": history[-1]["val_loss"],
        "steps": run.step,
        "steps_to_99": next((h["step"] for h in history if h["val_accuracy"] >= 0.99), None),
        "wall_time_s": round(time.perf_counter() - run.start, 2),
        "history": history,
        "resumes": run.resumes,
    }
    layers = lstm_layers(run.config, run.device)
    if layers is not None:
        metrics["lstm_layers"] = layers
    out = Path(run.config.out)
    write_json(metrics, out / METRICS)
    save_curves(history, out / CURVES, run.title)
    return metrics


def save_curves(history: list[dict], path: Path, title: str) -> None:
    # A bare Figure needs no pyplot backend, so saving never changes a notebook's plotting.
    from matplotlib.figure import Figure

    steps = [h["step"] for h in history]
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "val"):
        ax_loss.plot(steps, [h[f"{split}_loss"] for h in history], marker=".", label=split)
        ax_acc.plot(steps, [h[f"{split}_accuracy"] for h in history], marker=".", label=split)
    ax_loss.set(xlabel="training step", ylabel="cross-entropy", yscale="log", title="loss")
    ax_acc.set(xlabel="training step", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


# ----------------------------------------------------------------------------- the loop


def train(config: Config) -> dict:
    """Train one model as configured; returns the metrics also written to <out>/metrics.json."""
    run = setup(config)
    print(describe_run(run), flush=True)
    bar = tqdm(total=run.total, initial=run.step, desc=run.title, disable=not config.progress, dynamic_ncols=True)
    try:
        with stop_on_sigint() as ctrl_c:
            while not finished(run):
                batches = next_epoch_batches(run)
                for batch in batches[run.batch_in_epoch:]:
                    train_step(run, batch)
                    bar.update()
                    if run.step % run.eval_every == 0 or run.step == run.total:
                        log(run, record(run), bar)
                    if finished(run) or ctrl_c["stop"]:
                        break
                if run.batch_in_epoch == len(batches):
                    run.epoch, run.batch_in_epoch = run.epoch + 1, 0
                save_checkpoint(run)  # once an epoch, at the stop, and on Ctrl-C
                if ctrl_c["stop"] and not finished(run):
                    raise TrainingInterrupted(run.step, run.ckpt_path)
    finally:
        bar.close()
    return finish(run)


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, choices=["lstm", "rnn"], help=f"model to train (default: {d.model})")
    p.add_argument("--input_length", type=int, default=d.input_length, help=f"digits the model reads; the palindrome has one more (default: {d.input_length})")
    p.add_argument("--input_dim", type=int, default=d.input_dim, help=f"1: each digit as a number, 10: one-hot (default: {d.input_dim})")
    p.add_argument("--num_classes", type=int, default=d.num_classes, help=f"output classes, the digits (default: {d.num_classes})")
    p.add_argument("--num_hidden", type=int, default=d.num_hidden, help=f"hidden units (default: {d.num_hidden})")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help=f"examples per batch (default: {d.batch_size})")
    p.add_argument("--learning_rate", type=float, default=d.learning_rate, help=f"RMSprop learning rate (default: {d.learning_rate})")
    p.add_argument("--max_epoch", type=int, default=d.max_epoch, help=f"passes over the training set (default: {d.max_epoch})")
    p.add_argument("--max_norm", type=float, default=d.max_norm, help=f"gradient-norm clipping threshold (default: {d.max_norm})")
    p.add_argument("--data_size", type=int, default=d.data_size, help=f"distinct palindromes in train + validation (default: {d.data_size})")
    p.add_argument("--portion_train", type=float, default=d.portion_train, help=f"fraction used for training (default: {d.portion_train})")
    p.add_argument("--forget_bias", type=float, default=d.forget_bias, help=f"LSTM forget-gate bias at initialisation (default: {d.forget_bias})")
    p.add_argument("--chrono", action="store_true", help="LSTM chrono initialisation of forget/input biases (overrides --forget_bias)")
    p.add_argument("--max_steps", type=int, default=d.max_steps, help="stop after this many updates (default: 0, no limit)")
    p.add_argument("--target_accuracy", type=float, default=d.target_accuracy, help="stop once validation accuracy reaches this (default: 0, off)")
    p.add_argument("--eval_every", type=int, default=d.eval_every, help="validate every N steps (default: 0, once an epoch)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed for data, initialisation and batch order (default: {d.seed})")
    p.add_argument("--device", default=d.device, help=f"auto, cpu, cuda, cuda:N or mps (default: {d.device})")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads; 0 (the default): as many as cores are idle at start-up, since torch's "
                        "threads spin-wait for each other and a core taken by another job slows every step (a seeded "
                        "run repeats exactly with the same --threads)")
    p.add_argument("--lstm_impl", default=d.lstm_impl, choices=["fast", "reference"],
                   help="how the LSTM's forward and backward run. By default (fast) a second implementation of the "
                        "same arithmetic runs: lstm_bptt.py, a hand-written backward through time with CPU kernels "
                        "(lstm_kernel.py). --lstm_impl reference turns it off and runs LSTM.recurrence in lstm.py, "
                        "the equations one step at a time under plain autograd (slower). (default: fast)")
    p.add_argument("--out", default=d.out, help="output folder (default: part1/runs/<model>_len<input_length>_seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that already holds a run, "
                                                            "deleting that run's checkpoint, metrics and curves")
    p.add_argument("--no_progress", dest="progress", action="store_false", help="hide the progress bar")
    args = p.parse_args(argv)
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def run_and_report(config: Config) -> None:
    metrics = train(config)  # TrainingInterrupted and TrainingFailed: run_cli's exits 130 and 1
    print(f"final validation accuracy {metrics['val_accuracy']:.4f} after {metrics['steps']} steps "
          f"({metrics['wall_time_s']:.0f} s); results in {metrics['config']['out']}")


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    run_cli(PROG, lambda: run_and_report(config))


if __name__ == "__main__":
    main()

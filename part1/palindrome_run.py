"""Everything a train.py run needs besides the model and its update: its folder, checkpoints, --resume,
stop signals, threads and the LSTM's fast-path choice. train.py uses it through a handful of calls on `run`.

What a run writes under --out: checkpoint.pt (at each epoch's end, at the stop, on a stop signal),
and when it ends metrics.json (settings, command, per-validation history, final accuracy, steps,
wall time) and curves.png. A folder that holds a run is continued (--resume) or started afresh
(--overwrite), never silently written over, and a second run on a folder is refused while the first
holds it. A run stopped by Ctrl-C, SIGTERM or SIGHUP and resumed ends with the same numbers, bit for
bit, as one that ran straight through (its history's times and its `resumes` record aside).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import lstm_bptt
import lstm_kernel
from cpu_threads import set_threads
from cs324_utils import (
    TrainingFailed,
    UserError,
    all_finite,
    atomic_save,
    atomic_write,
    check_fits,
    check_out,
    pick_device,
    refuse_existing_run,
    remove_stray_tmp,
    write_json,
)
from file_checks import Fields, read_checkpoint
from training_run import StopRequests, check_budget, check_same_settings, hold_folder

PROG = "train.py"
CHECKPOINT, METRICS, CURVES = "checkpoint.pt", "metrics.json", "curves.png"
# How each Config field may differ between a checkpoint and the run that resumes it. Every field is in
# exactly one group (a test checks this), so a new field needs a decision here.
# The problem, the model, the optimiser and the data: a different value would be a different run.
RESUME_MUST_MATCH = ("model", "input_length", "input_dim", "num_classes", "num_hidden", "batch_size",
                     "learning_rate", "max_norm", "data_size", "portion_train", "forget_bias", "chrono", "seed")
# Stopping rules, validation schedule and where/how the numbers run: honoured, and recorded in
# metrics.json's "resumes" with the step from which they applied.
RESUME_MAY_CHANGE = ("max_epoch", "max_steps", "target_accuracy", "eval_every", "device", "threads", "lstm_impl")
# How this invocation runs, not what it trains.
RUN_CONTROL = ("out", "resume", "overwrite", "progress")
HISTORY_KEYS = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "time")
EVAL_BATCH = 2048  # validation samples per forward pass (no gradients kept)


@dataclass
class Place:
    """Where training starts: after `step` updates, `batch` of them in the current epoch."""

    step: int
    batch: int


class PalindromeRun:
    """One run of train.py: `with PalindromeRun(config) as run:` refuses what cannot run (cheap checks
    first), then holds --out until the run ends."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.out = check_out(config.out, config.resume, config.overwrite)
        if config.model == "lstm":
            lstm_kernel.check_environment()  # a bad CS324_LSTM_* value stops the run here, not at the first step
        self.device = pick_device(config.device)
        nbytes, what = memory_estimate(config)
        check_fits(nbytes, what, self.device)
        self.total = config.total_steps()
        self.title = f"{config.model.upper()}, input length {config.input_length}, seed {config.seed}"
        self.ckpt: Fields | None = None
        self.stack = contextlib.ExitStack()
        self.history: list[dict] = []
        self.window = {"loss": 0.0, "correct": 0.0, "count": 0.0}  # training sums since the last validation
        self.resumes: list[dict] = []
        self.epoch = self.batch_in_epoch = 0
        self.bar: Any = None

    def __enter__(self) -> PalindromeRun:
        self.stack.enter_context(hold_folder(self.out, PROG))
        try:
            refuse_existing_run(self.out, (METRICS, CHECKPOINT), self.config.resume, self.config.overwrite)
            if self.config.resume:
                self.ckpt = read_checkpoint(self.out / CHECKPOINT, "--resume: checkpoint")
                check_same_settings(self.ckpt.fields("config"), self.config, RESUME_MUST_MATCH, type(self.config)())
            for path in remove_stray_tmp(self.out):
                print(f"{PROG}: removed {path.name}, left by a write that was cut short", file=sys.stderr)
            self.threads_why = set_threads(self.config.threads)[1]
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stack.close()

    # ------------------------------------------------------------------------- start-up

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator) -> Place:
        """Restore a resume's state into these objects (or clear an earlier run), print the run's first
        line, and from here on let a stop signal end the loop between updates. Returns where it starts."""
        self.model, self.optimizer, self.shuffle = model, optimizer, shuffle
        check_budget(self.total, lambda: seconds_per_step(model, self.config, self.device),
                     f"--max_epoch {self.config.max_epoch} (--max_steps {self.config.max_steps})")
        place = Place(0, 0) if self.ckpt is None else self._restore(self.ckpt)
        if self.ckpt is None and self.config.overwrite:
            for name in (CHECKPOINT, METRICS, CURVES):  # nothing of the earlier run may pass for this one's
                (self.out / name).unlink(missing_ok=True)
        print(self.describe(), flush=True)
        self.stop = self.stack.enter_context(StopRequests())
        from tqdm import tqdm
        self.bar = tqdm(total=self.total, initial=place.step, desc=self.title, disable=not self.config.progress,
                        dynamic_ncols=True)
        self.clock = time.perf_counter() - (self.ckpt.number("elapsed", 0) if self.ckpt is not None else 0.0)
        return place

    def _restore(self, ckpt: Fields) -> Place:
        """The checkpoint's weights, optimiser state, batch order, history and place; every field checked."""
        step = ckpt.int("step", 0)
        if self.total < step:
            c = self.config
            raise UserError(f"--resume: the run is already at step {step}, beyond the budget of {self.total} "
                            f"steps that --max_epoch {c.max_epoch} and --max_steps {c.max_steps} give")
        self.model.load_state_dict(ckpt.state_dict("model", self.model))
        ckpt.optimizer_state("optimizer", self.optimizer)
        if any(g["lr"] != self.config.learning_rate for g in self.optimizer.param_groups):
            raise ckpt.error("optimizer", f"holds a learning rate other than --learning_rate {self.config.learning_rate}")
        try:
            self.shuffle.set_state(ckpt.tensor("shuffle_state", None, torch.uint8))
        except (RuntimeError, ValueError) as exc:
            raise ckpt.error("shuffle_state", f"is not a random state ({type(exc).__name__})") from None
        per_epoch = self.config.steps_per_epoch()
        self.epoch = ckpt.int("epoch", 0)
        self.batch_in_epoch = ckpt.int("batch_in_epoch", 0, per_epoch - 1)
        if step != self.epoch * per_epoch + self.batch_in_epoch:
            raise ckpt.error("step", f"is {step}, not epoch {self.epoch} x {per_epoch} + batch {self.batch_in_epoch}")
        for entry in ckpt.records("history"):
            if set(entry.obj) != set(HISTORY_KEYS):
                raise entry.error("", f"must hold exactly {', '.join(HISTORY_KEYS)}")
            for key in HISTORY_KEYS:
                entry.number(key)
        self.history = ckpt.list("history")
        window = ckpt.fields("window")
        self.window = {k: window.number(k, 0) for k in ("loss", "correct", "count")}
        for entry in ckpt.records("resumes"):
            entry.int("step", 0), entry.fields("changed")
            if not all(isinstance(v, list) and len(v) == 2 and all(isinstance(x, (str, int, float, bool)) for x in v)
                       for v in entry.obj["changed"].values()):
                raise entry.error("changed", "must map settings to [old, new] values")
        self.resumes = ckpt.list("resumes")
        saved, defaults = ckpt.fields("config").obj, type(self.config)()
        changed = {k: [saved.get(k, getattr(defaults, k)), getattr(self.config, k)] for k in RESUME_MAY_CHANGE
                   if saved.get(k, getattr(defaults, k)) != getattr(self.config, k)}
        self.resumes.append({"step": step, "changed": changed})
        return Place(step, self.batch_in_epoch)

    def describe(self) -> str:
        """The run's first line: what trains, where, on which layers, and where its results go."""
        config, threads = self.config, torch.get_num_threads()
        parts = [f"{PROG}: {self.title}", f"{self.device}, {threads} thread{'s' * (threads != 1)} ({self.threads_why})"]
        if config.model == "lstm":
            layers = self.lstm_layers(decide=True) or {}
            chosen = ("C cell with its own products" if layers.get("matmul") == "c"
                      else ", ".join(f"{k} {v}" for k, v in layers.items() if isinstance(v, str)))
            impl = "LSTM fast path" if config.lstm_impl == "fast" else "LSTM reference (autograd)"
            parts.append(impl + (f" ({chosen})" if chosen else ""))
        if config.resume:
            changed = self.resumes[-1]["changed"]
            parts.append(f"resuming at step {self.resumes[-1]['step']}" +
                         "".join(f", --{k} {new} (was {old})" for k, (old, new) in changed.items()))
        return "; ".join(parts) + f"; writing to {self.out}"

    def lstm_layers(self, decide: bool = False) -> dict | None:
        """Which fast-path layers this process uses, for an LSTM on the fast path on the CPU; decide: make the
        training steps' choices now (a few milliseconds of timing)."""
        c = self.config
        if c.model != "lstm" or c.lstm_impl != "fast" or self.device.type != "cpu":
            return None
        if decide:
            lstm_bptt.plan(c.batch_size, c.num_hidden)
        return lstm_kernel.describe()

    # ------------------------------------------------------------------------- the loop's calls

    def finished(self, step: int) -> bool:
        target = self.config.target_accuracy
        reached = bool(target) and bool(self.history) and self.history[-1]["val_accuracy"] >= target
        return step >= self.total or reached

    def new_epoch(self, shuffle: torch.Generator) -> None:
        self.epoch_shuffle_state = shuffle.get_state()  # a resume from mid-epoch redraws this epoch's order

    def log(self, step: int, loss: float, correct: int, count: int) -> None:
        """Add a step's loss and correct predictions to the sums the next validation reports."""
        if not math.isfinite(loss):
            raise TrainingFailed(f"training diverged at step {step} (non-finite loss); try a lower --learning_rate")
        self.batch_in_epoch += 1
        self.window["loss"] += loss * count
        self.window["correct"] += correct
        self.window["count"] += count
        self.bar.update()

    def record(self, step: int, val_loss: float, val_acc: float) -> None:
        """One entry of the history: validation now, training means since the last entry."""
        n = max(self.window["count"], 1)  # 0 only when a resumed run takes no step
        self.history.append({"epoch": round(step / self.config.steps_per_epoch(), 4), "step": step,
                             "train_loss": self.window["loss"] / n, "train_accuracy": self.window["correct"] / n,
                             "val_loss": val_loss, "val_accuracy": val_acc,
                             "time": round(time.perf_counter() - self.clock, 2)})
        self.window = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        if not math.isfinite(val_loss):
            raise TrainingFailed(f"training diverged at step {step} (non-finite loss); try a lower --learning_rate")
        self.bar.set_postfix(loss=f"{self.history[-1]['train_loss']:.3f}", val_acc=f"{val_acc:.4f}")
        if not self.config.progress:  # a log line instead, for runs in the background
            print(f"{self.title}: step {step}, val_accuracy {val_acc:.4f}", flush=True)

    def recorded(self, step: int) -> bool:
        return bool(self.history) and self.history[-1]["step"] == step

    def stop_asked(self) -> bool:
        return bool(self.stop.signum)

    def end_epoch(self, step: int, batches: int) -> None:
        """A checkpoint once an epoch, at the stop, and on a stop signal, which then ends the run."""
        if self.batch_in_epoch == batches:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self._save_checkpoint(step)
        if self.stop.signum and not self.finished(step):
            raise self.stop.stopped(f"at step {step}; checkpoint saved to {self.out / CHECKPOINT}; "
                                    f"continue with the same flags plus --resume")

    def _save_checkpoint(self, step: int) -> None:
        """Everything --resume needs, written atomically; a non-finite model is never saved."""
        state = self.model.state_dict()
        if not all_finite(state):
            raise TrainingFailed(f"training diverged by step {step} (non-finite weights); {self.out / CHECKPOINT} "
                                 f"keeps the last good state; try a lower --learning_rate")
        mid_epoch = self.batch_in_epoch > 0
        atomic_save({"model": state, "optimizer": self.optimizer.state_dict(),
                     "shuffle_state": self.epoch_shuffle_state if mid_epoch else self.shuffle.get_state(),
                     "batch_in_epoch": self.batch_in_epoch, "epoch": self.epoch, "step": step,
                     "history": self.history, "window": self.window, "resumes": self.resumes,
                     "elapsed": time.perf_counter() - self.clock, "config": dataclasses.asdict(self.config)},
                    self.out / CHECKPOINT)

    # ------------------------------------------------------------------------- the end

    def finish(self, step: int) -> dict:
        """metrics.json and curves.png; returns the metrics."""
        self.stop.end()
        history = self.history
        metrics = {
            "config": dataclasses.asdict(self.config),
            "command": " ".join(sys.argv),
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "val_accuracy": history[-1]["val_accuracy"],
            "val_loss": history[-1]["val_loss"],
            "steps": step,
            "steps_budget": self.total,
            "steps_to_99": next((h["step"] for h in history if h["val_accuracy"] >= 0.99), None),
            "wall_time_s": round(time.perf_counter() - self.clock, 2),
            "history": history,
            "resumes": self.resumes,
        }
        layers = self.lstm_layers()
        if layers is not None:
            metrics["lstm_layers"] = layers
        write_json(metrics, self.out / METRICS)
        save_curves(history, self.out / CURVES, self.title)
        return metrics


# ----------------------------------------------------------------------------- helpers


def memory_estimate(config: Any) -> tuple[float, str]:
    """Rough bytes a run needs (within a factor of about 2) and the flags of its largest part.

    Only sizes that cannot fit are refused, so the estimate errs low rather than high.
    """
    T, D, H, C = config.input_length, config.input_dim, config.num_hidden, config.num_classes
    gates = 4 * H if config.model == "lstm" else H
    n_params = gates * (D + H + 1) + C * (H + 1)
    # Backward keeps each step's gate activations, c, h and tanh(c), and builds their gradients.
    per_sample_step = D + 3 * gates + 4 * H
    n_val = config.data_size - int(config.data_size * config.portion_train)
    eval_batch = EVAL_BATCH
    parts = [
        (4 * 4 * n_params, f"--num_hidden {H} (weights, gradients, RMSprop state, clipping)"),
        (4 * config.batch_size * T * per_sample_step,
         f"--batch_size {config.batch_size} x --input_length {T} x --num_hidden {H} (activations kept for backward)"),
        (4 * min(n_val, eval_batch) * T * (D + gates + 3 * H),
         f"--input_length {T} x --num_hidden {H} (validation batches of {eval_batch})"),
        (3 * 8 * config.data_size * (T + 1), f"--data_size {config.data_size} x --input_length {T} (the palindromes)"),
    ]
    return sum(n for n, _ in parts), max(parts)[1]


def seconds_per_step(model: nn.Module, config: Any, device: torch.device, rounds: int = 3) -> float:
    """A forward and backward pass of a copy of the model on one random batch, the fastest of a few rounds:
    a lower bound on a training step, on inputs from a private generator (training's RNG stays untouched)."""
    probe = copy.deepcopy(model)
    rng = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (config.batch_size, config.input_length, 1), generator=rng).float()
    x = (F.one_hot(x[..., 0].long(), 10).float() if config.input_dim == 10 else x).to(device)
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        probe(x).sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def save_curves(history: list[dict], path: Path, title: str) -> None:
    """Loss and accuracy against the training step, training and validation."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot backend switched under a notebook

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

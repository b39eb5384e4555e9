"""Train the LSTM or the vanilla RNN to predict the last digit of a palindrome.

    python train.py --input_length 20                 # LSTM, defaults below
    python train.py --model rnn --input_length 9
    python train.py --input_length 99 --input_dim 10 --target_accuracy 0.995

Writes metrics.json (config, per-evaluation history, final val_accuracy, steps, wall time),
curves.png and checkpoint.pt (for --resume) to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dataset import PalindromeDataset
from lstm import LSTM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError, atomic_write, pick_device, set_seed, write_json
from vanilla_rnn import VanillaRNN

HERE = Path(__file__).resolve().parent


@dataclass
class Config:
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
    out: str = ""
    resume: bool = False
    progress: bool = True

    def validate(self) -> "Config":
        """Refuse impossible settings before any work, naming the flag."""
        checks = [
            (self.model in ("lstm", "rnn"), f"--model must be lstm or rnn, got {self.model!r}"),
            (self.input_length >= 1, f"--input_length must be >= 1, got {self.input_length}"),
            (self.input_dim in (1, 10), f"--input_dim must be 1 (digit as a number) or 10 (one-hot), got {self.input_dim}"),
            (self.num_classes == 10, f"--num_classes must be 10 (the digits 0-9), got {self.num_classes}"),
            (self.num_hidden >= 1, f"--num_hidden must be >= 1, got {self.num_hidden}"),
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (self.learning_rate > 0 and math.isfinite(self.learning_rate), f"--learning_rate must be > 0, got {self.learning_rate}"),
            (self.max_epoch >= 1, f"--max_epoch must be >= 1, got {self.max_epoch}"),
            (self.max_norm > 0, f"--max_norm must be > 0, got {self.max_norm}"),
            (0 < self.portion_train < 1, f"--portion_train must be in (0, 1), got {self.portion_train}"),
            (self.max_steps >= 0, f"--max_steps must be >= 0 (0: no limit), got {self.max_steps}"),
            (0 <= self.target_accuracy <= 1, f"--target_accuracy must be in [0, 1] (0: off), got {self.target_accuracy}"),
            (self.eval_every >= 0, f"--eval_every must be >= 0 (0: once an epoch), got {self.eval_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        cap = PalindromeDataset.max_distinct(self.input_length)
        if self.data_size > cap:
            # Capped, as in the course template, with a one-line warning.
            print(f"warning: --data_size {self.data_size} exceeds the {cap} distinct palindromes of "
                  f"length {self.input_length + 1}; using {cap}", file=sys.stderr)
            self.data_size = cap
        n_train = int(self.data_size * self.portion_train)
        if n_train < 1 or self.data_size - n_train < 1:
            raise UserError(f"--data_size {self.data_size} is too small to split into training and "
                            f"validation sets with --portion_train {self.portion_train}")
        if not self.out:
            self.out = str(HERE / "runs" / f"{self.model}_len{self.input_length}_seed{self.seed}")
        return self


def build_model(config: Config) -> nn.Module:
    args = (config.input_length, config.input_dim, config.num_hidden, config.num_classes)
    if config.model == "lstm":
        return LSTM(*args, forget_bias=config.forget_bias, chrono=config.chrono)
    return VanillaRNN(*args)


@torch.no_grad()
def evaluate(model: nn.Module, data: PalindromeDataset, indices: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
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


# Settings a checkpoint must share with the run that resumes it.
_RESUME_KEYS = ("model", "input_length", "input_dim", "num_classes", "num_hidden", "batch_size",
                "data_size", "portion_train", "seed")


def load_checkpoint(path: Path, config: Config) -> dict:
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        saved = ckpt["config"]
    except Exception as exc:
        raise UserError(f"--resume: {path} is corrupt or not a checkpoint of train.py ({type(exc).__name__})") from None
    for key in _RESUME_KEYS:
        if saved.get(key) != getattr(config, key):
            raise UserError(f"--resume: {path} was made with --{key} {saved.get(key)}, not {getattr(config, key)}")
    return ckpt


def train(config: Config) -> dict:
    """Train one model as configured; returns the metrics also written to <out>/metrics.json."""
    config.validate()
    device = pick_device(config.device)
    out = Path(config.out)
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path, config) if config.resume else None

    set_seed(config.seed)
    data = PalindromeDataset(config.input_length, config.data_size, one_hot=config.input_dim == 10,
                             seed=config.seed).to(device)
    train_idx, val_idx = data.split(config.portion_train)
    model = build_model(config).to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=config.learning_rate)
    shuffle = torch.Generator().manual_seed(config.seed)  # batch order, independent of model init
    history: list[dict] = []
    epoch = step = 0
    elapsed = 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle.set_state(ckpt["shuffle_state"])
        history, epoch, step, elapsed = ckpt["history"], ckpt["epoch"], ckpt["step"], ckpt["elapsed"]

    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    total = config.max_epoch * steps_per_epoch
    if config.max_steps:
        total = min(total, config.max_steps)
    eval_every = config.eval_every or steps_per_epoch
    title = f"{config.model.upper()}, input length {config.input_length}, seed {config.seed}"

    def reached_target() -> bool:
        return bool(config.target_accuracy) and bool(history) and history[-1]["val_accuracy"] >= config.target_accuracy

    start = time.perf_counter() - elapsed
    bar = tqdm(total=total, initial=step, desc=title, disable=not config.progress, dynamic_ncols=True)
    run_loss = run_correct = run_count = 0.0

    def record() -> dict:
        """Validate now, log the training means since the last record, and reset them."""
        nonlocal run_loss, run_correct, run_count
        val_loss, val_acc = evaluate(model, data, val_idx)
        n = max(run_count, 1)  # 0 only when a resumed run takes no step
        history.append({"epoch": round(step / steps_per_epoch, 4), "step": step,
                        "train_loss": run_loss / n, "train_accuracy": run_correct / n,
                        "val_loss": val_loss, "val_accuracy": val_acc,
                        "time": round(time.perf_counter() - start, 2)})
        run_loss = run_correct = run_count = 0.0
        return history[-1]

    while epoch < config.max_epoch and step < total and not reached_target():
        for batch in torch.randperm(len(train_idx), generator=shuffle).split(config.batch_size):
            x, y = data.batch(train_idx[batch])
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.max_norm)
            optimizer.step()
            step += 1
            run_loss += loss.item() * len(y)
            run_correct += (logits.argmax(1) == y).sum().item()
            run_count += len(y)
            bar.update()
            if step % eval_every == 0 or step == total:
                entry = record()
                bar.set_postfix(loss=f"{entry['train_loss']:.3f}", val_acc=f"{entry['val_accuracy']:.4f}")
                if not config.progress:  # a log line instead, for runs in the background
                    print(f"{title}: step {step}, val_accuracy {entry['val_accuracy']:.4f}", flush=True)
                if not math.isfinite(entry["val_loss"]):
                    raise UserError(f"training diverged at step {step} (non-finite loss); try a lower --learning_rate")
                if reached_target():
                    break
            if step >= total:
                break
        else:
            epoch += 1
        # One checkpoint per epoch (or at the stop), written atomically, to resume from.
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "shuffle_state": shuffle.get_state(), "history": history, "epoch": epoch,
                 "step": step, "elapsed": time.perf_counter() - start,
                 "config": dataclasses.asdict(config)}
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
    bar.close()

    if not history or history[-1]["step"] != step:  # stopped between evaluations
        record()
    steps_to_99 = next((h["step"] for h in history if h["val_accuracy"] >= 0.99), None)
    metrics = {
        "config": dataclasses.asdict(config),
        "command": " ".join(sys.argv),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "val_accuracy": history[-1]["val_accuracy"],
        "val_loss": history[-1]["val_loss"],
        "steps": step,
        "steps_to_99": steps_to_99,
        "wall_time_s": round(time.perf_counter() - start, 2),
        "history": history,
    }
    write_json(metrics, out / "metrics.json")
    save_curves(history, out / "curves.png", title)
    return metrics


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--device", default=d.device, help=f"auto, cpu, cuda or mps (default: {d.device})")
    p.add_argument("--out", default=d.out, help="output folder (default: part1/runs/<model>_len<input_length>_seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--no_progress", dest="progress", action="store_false", help="hide the progress bar")
    return Config(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    try:
        metrics = train(parse_args(argv))
    except UserError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"final validation accuracy {metrics['val_accuracy']:.4f} after {metrics['steps']} steps "
          f"({metrics['wall_time_s']:.0f} s); results in {metrics['config']['out']}")


if __name__ == "__main__":
    main()

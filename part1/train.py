"""Part I: train the LSTM or the vanilla RNN to predict the last digit of a palindrome.

    cd part1 && python train.py --input_length 20       # LSTM, the course settings
    python train.py --model rnn --input_length 9
    python train.py --input_length 99 --input_dim 10 --chrono --target_accuracy 0.995
    python train.py --help                              # every setting with its default

Read top to bottom, this is the assignment: the settings (Config), the models (lstm.py,
vanilla_rnn.py), one RMSprop update with the gradient norm clipped (train_step), validation
(evaluate) and the loop (train), on palindromes from dataset.py. A run writes metrics.json,
curves.png and checkpoint.pt to --out. What a run needs besides (its folder and checkpoints,
--resume, stop signals, threads, the LSTM's fast path) lives in palindrome_run.py and is used
through the calls on `run`; every other line is the training itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cs324_utils import OneLineParser, UserError, check_seed, check_threads, run_cli
from dataset import PalindromeDataset, capped_size, capped_warning
from lstm import LSTM
from palindrome_run import EVAL_BATCH, PalindromeRun
from vanilla_rnn import VanillaRNN

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    """The settings of a run: the course template's, a few of ours, and how the run is kept."""

    model: str = "lstm"
    input_length: int = 19  # digits read; the palindrome has one more
    input_dim: int = 1  # 1: each digit as a number (the template); 10: one-hot
    num_classes: int = 10
    num_hidden: int = 128
    batch_size: int = 128
    learning_rate: float = 1e-3
    max_epoch: int = 20
    max_norm: float = 10.0  # gradient-norm clipping
    data_size: int = 100_000  # distinct palindromes, or all there are where fewer exist
    portion_train: float = 0.8
    forget_bias: float = 1.0  # LSTM: added to b_f at initialisation
    chrono: bool = False  # LSTM: chrono initialisation of b_f and b_i instead
    max_steps: int = 0  # 0: no limit beyond max_epoch
    target_accuracy: float = 0.0  # stop once validation accuracy reaches this (0: off)
    eval_every: int = 0  # validate every N steps (0: once an epoch)
    seed: int = 0
    # How the run is kept and where it runs (palindrome_run.py).
    device: str = "auto"
    threads: int = 0  # 0: the cores idle at start-up
    lstm_impl: str = "fast"  # fast: lstm_bptt.py; reference: LSTM.recurrence under autograd
    out: str = ""  # "": part1/runs/<model>_len<input_length>_seed<seed>
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def validated(self, warn: bool = True) -> Config:
        """Refuse impossible settings before any work, naming the flag. Returns the run's resolved settings:
        --data_size capped to the palindromes that exist (warn: say so), the default --out."""
        for ok, message in self._checks():
            if not ok:
                raise UserError(message)
        check_seed(self.seed)
        check_threads(self.threads)
        config, cap = self, capped_size(self.input_length, self.data_size)
        if cap < self.data_size:
            # An epoch over the few palindromes of a short length is a few steps (7 at length 5): without a
            # --max_steps the run keeps the steps --data_size would have given, in more epochs.
            epochs = self.max_epoch
            if not self.max_steps:
                epochs = math.ceil(self.max_epoch * self.steps_per_epoch(self.data_size) / self.steps_per_epoch(cap))
            if warn:
                print(capped_warning(self.input_length, self.data_size, cap, None if self.max_steps else epochs),
                      file=sys.stderr)
            config = dataclasses.replace(self, data_size=cap, max_epoch=epochs)
        if int(config.data_size * config.portion_train) < 1 or config.data_size - int(config.data_size * config.portion_train) < 1:
            raise UserError(f"--data_size {config.data_size} is too small to split into training and "
                            f"validation sets with --portion_train {config.portion_train}")
        out = self.out or str(HERE / "runs" / f"{self.model}_len{self.input_length}_seed{self.seed}")
        return dataclasses.replace(config, out=out)

    def steps_per_epoch(self, data_size: int | None = None) -> int:
        return math.ceil(int((data_size or self.data_size) * self.portion_train) / self.batch_size)

    def total_steps(self) -> int:
        """The step budget: --max_epoch epochs, or --max_steps if that is fewer."""
        total = self.max_epoch * self.steps_per_epoch()
        return min(total, self.max_steps) if self.max_steps else total

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
            (1 <= self.max_epoch <= 10**15, f"--max_epoch must be from 1 to 10^15, got {self.max_epoch}"),
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


def build_model(config: Config) -> nn.Module:
    args = (config.input_length, config.input_dim, config.num_hidden, config.num_classes)
    if config.model == "lstm":
        return LSTM(*args, forget_bias=config.forget_bias, chrono=config.chrono, hand_bptt=config.lstm_impl == "fast")
    return VanillaRNN(*args)


# ----------------------------------------------------------------------------- one update, validation


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               max_norm: float) -> tuple[float, int]:
    """One RMSprop update on a batch x (B, T, D), y (B,), the gradient norm clipped to max_norm.
    Returns the batch's mean loss and its number of correct predictions."""
    logits = model(x)                            # (B, 10): the last step's p_T
    loss = F.cross_entropy(logits, y)            # softmax and cross-entropy in one call
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == y).sum())


@torch.no_grad()
def evaluate(model: nn.Module, data: PalindromeDataset, indices: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the given samples."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for idx in indices.split(EVAL_BATCH):
        x, y = data.batch(idx)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train()
    return loss_sum / len(indices), correct / len(indices)


# ----------------------------------------------------------------------------- the loop


def train(config: Config) -> dict:
    """Train one model as configured; returns the metrics also written to <out>/metrics.json."""
    config = config.validated()
    with PalindromeRun(config) as run:  # refuses what cannot run, then holds --out (palindrome_run.py)
        torch.manual_seed(config.seed)
        data = PalindromeDataset(config.input_length, config.data_size, one_hot=config.input_dim == 10,
                                 seed=config.seed).to(run.device)
        train_idx, val_idx = data.split(config.portion_train)
        model = build_model(config).to(run.device)
        optimizer = torch.optim.RMSprop(model.parameters(), lr=config.learning_rate)
        shuffle = torch.Generator().manual_seed(config.seed)  # the batch order, apart from the initialisation
        eval_every = config.eval_every or config.steps_per_epoch()
        at = run.start(model, optimizer, shuffle)  # on --resume: the checkpoint's state and place
        step = at.step

        while not run.finished(step):
            run.new_epoch(shuffle)  # the order's random state, for a checkpoint in mid-epoch
            batches = torch.randperm(len(train_idx), generator=shuffle).split(config.batch_size)
            for batch in batches[at.batch if step == at.step else 0:]:
                x, y = data.batch(train_idx[batch])  # (B, T, D), (B,)
                loss, correct = train_step(model, optimizer, x, y, config.max_norm)
                step += 1
                run.log(step, loss, correct, len(y))  # stops a run whose loss is not finite
                if step % eval_every == 0 or step == run.total:
                    run.record(step, *evaluate(model, data, val_idx))
                if run.finished(step) or run.stop_asked():
                    break
            run.end_epoch(step, len(batches))  # checkpoint; a stop signal ends the run here

        if not run.recorded(step):  # stopped between validations
            run.record(step, *evaluate(model, data, val_idx))
        return run.finish(step)


# ----------------------------------------------------------------------------- the command line


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--model", default=d.model, choices=["lstm", "rnn"], help=f"model to train (default: {d.model})")
    add("--input_length", type=int, default=d.input_length,
        help=f"digits the model reads; the palindrome has one more (default: {d.input_length})")
    add("--input_dim", type=int, default=d.input_dim, help=f"1: each digit as a number, 10: one-hot (default: {d.input_dim})")
    add("--num_classes", type=int, default=d.num_classes, help=f"output classes, the digits (default: {d.num_classes})")
    add("--num_hidden", type=int, default=d.num_hidden, help=f"hidden units (default: {d.num_hidden})")
    add("--batch_size", type=int, default=d.batch_size, help=f"examples per batch (default: {d.batch_size})")
    add("--learning_rate", type=float, default=d.learning_rate, help=f"RMSprop learning rate (default: {d.learning_rate})")
    add("--max_epoch", type=int, default=d.max_epoch, help=f"passes over the training set (default: {d.max_epoch})")
    add("--max_norm", type=float, default=d.max_norm, help=f"gradient-norm clipping threshold (default: {d.max_norm})")
    add("--data_size", type=int, default=d.data_size, help=f"distinct palindromes in train + validation (default: {d.data_size})")
    add("--portion_train", type=float, default=d.portion_train, help=f"fraction used for training (default: {d.portion_train})")
    add("--forget_bias", type=float, default=d.forget_bias, help=f"LSTM forget-gate bias at initialisation (default: {d.forget_bias})")
    add("--chrono", action="store_true", help="LSTM chrono initialisation of forget/input biases (overrides --forget_bias)")
    add("--max_steps", type=int, default=d.max_steps, help="stop after this many updates (default: 0, no limit)")
    add("--target_accuracy", type=float, default=d.target_accuracy, help="stop once validation accuracy reaches this (default: 0, off)")
    add("--eval_every", type=int, default=d.eval_every, help="validate every N steps (default: 0, once an epoch)")
    add("--seed", type=int, default=d.seed, help=f"seed for data, initialisation and batch order (default: {d.seed})")
    add("--device", default=d.device, help=f"auto, cpu, cuda, cuda:N or mps (default: {d.device})")
    add("--threads", type=int, default=d.threads,
        help="CPU threads; 0 (the default): as many as cores are idle at start-up, since torch's threads spin-wait "
             "for each other and a core taken by another job slows every step (a seeded run repeats exactly with "
             "the same --threads)")
    add("--lstm_impl", default=d.lstm_impl, choices=["fast", "reference"],
        help="fast (the default): the LSTM's same arithmetic with a hand-written backward through time and CPU "
             "kernels (lstm_bptt.py); reference: LSTM.recurrence in lstm.py, the equations one step at a time "
             "under plain autograd (slower)")
    add("--out", default=d.out, help="output folder (default: part1/runs/<model>_len<input_length>_seed<seed>)")
    add("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    add("--overwrite", action="store_true", help="start afresh in an --out that already holds a run, deleting that "
                                                 "run's files (needed to write into the committed part1/results)")
    add("--no_progress", dest="progress", action="store_false", help="a log line per validation instead of a progress bar")
    args = p.parse_args(argv)
    return Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)})


def main(argv: list[str] | None = None) -> None:
    """One line on stderr and exit 2 for bad input, 1 on divergence, 128 + signal after Ctrl-C or SIGTERM."""
    config = parse_args(argv)

    def run_and_report() -> None:
        metrics = train(config)
        print(f"final validation accuracy {metrics['val_accuracy']:.4f} after {metrics['steps']} steps "
              f"({metrics['wall_time_s']:.0f} s); results in {metrics['config']['out']}")
    run_cli("train.py", run_and_report)


if __name__ == "__main__":
    main()

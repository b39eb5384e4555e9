"""Palindromes of digits 0-9: the model reads the first input_length digits and predicts the last."""
from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def distinct_halves(n: int, half_length: int, generator: torch.Generator) -> torch.Tensor:
    """n distinct random digit rows (n, half_length), built as tensors, never digit by digit."""
    if half_length <= 7:  # small space: draw without replacement from all 10**half numbers
        numbers = torch.randperm(10 ** half_length, generator=generator)[:n]
        powers = 10 ** torch.arange(half_length - 1, -1, -1)
        return numbers[:, None] // powers % 10
    # Large space (10**half may not even fit in int64): draw rows, drop repeats, top up.
    rows = torch.empty(0, half_length, dtype=torch.long)
    while len(rows) < n:
        extra = torch.randint(0, 10, (n - len(rows) + 16, half_length), generator=generator)
        rows = torch.unique(torch.cat([rows, extra]), dim=0)  # sorts, so shuffle below
    return rows[torch.randperm(len(rows), generator=generator)[:n]]


def make_palindromes(halves: torch.Tensor, seq_length: int) -> torch.Tensor:
    """Mirror digit rows (N, ceil(seq_length/2)) into palindromes (N, seq_length)."""
    mirrored = halves.flip(1) if seq_length % 2 == 0 else halves[:, :-1].flip(1)
    return torch.cat([halves, mirrored], dim=1)


def capped_size(input_length: int, n: int) -> int:
    """min(n, number of distinct palindromes), without building 10**(length/2) for long sequences."""
    half_length = math.ceil((input_length + 1) / 2)
    if n < 1 or len(str(n)) <= half_length:  # n has at most half_length digits: n < 10**half_length
        return n
    return min(n, 10 ** half_length)


def capped_warning(input_length: int, requested: int, capped: int, epochs: int | None = None) -> str:
    """The one-line warning for a --data_size above the palindromes that exist (epochs: the longer run that
    keeps the step budget of --data_size)."""
    note = f", in {epochs} epochs: about the steps --max_epoch would take over --data_size" if epochs else ""
    return (f"warning: --data_size {requested} exceeds the {capped} distinct palindromes of length "
            f"{input_length + 1}; using {capped}{note}")


def encode(digits: torch.Tensor, one_hot: bool) -> torch.Tensor:
    """Digits (B, T) -> model input (B, T, 10) if one_hot else (B, T, 1), float32."""
    return F.one_hot(digits, 10).float() if one_hot else digits.unsqueeze(-1).float()


class PalindromeDataset(Dataset):
    """total_len distinct palindromes of length input_length + 1, drawn with a seeded generator.

    Same interface as the course template (input_length, total_len, one_hot); the digits are
    held as one tensor so whole batches come from `batch(indices)` without a Python loop.
    """

    def __init__(self, input_length: int, total_len: int, one_hot: bool = False, seed: int = 42) -> None:
        if input_length < 1:
            raise ValueError(f"input_length must be >= 1, got {input_length}")
        self.input_length = input_length
        self.seq_length = input_length + 1
        self.one_hot = one_hot
        self.input_dim = 10 if one_hot else 1
        half_length = math.ceil(self.seq_length / 2)
        max_len = capped_size(input_length, total_len)
        if total_len > max_len:
            print(capped_warning(input_length, total_len, max_len), file=sys.stderr)
            total_len = max_len
        generator = torch.Generator().manual_seed(seed)
        halves = distinct_halves(total_len, half_length, generator)
        self.palindromes = make_palindromes(halves, self.seq_length)  # (N, T + 1) long

    @staticmethod
    def max_distinct(input_length: int) -> int:
        """Number of distinct palindromes: one per choice of the first half."""
        return 10 ** math.ceil((input_length + 1) / 2)

    def __len__(self) -> int:
        return len(self.palindromes)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([idx]))
        return x[0], int(y[0])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, input_length, input_dim) and labels (B,) for a tensor of indices."""
        digits = self.palindromes[indices.to(self.palindromes.device)]
        return encode(digits[:, :-1], self.one_hot), digits[:, -1]

    def to(self, device: torch.device | str) -> "PalindromeDataset":
        self.palindromes = self.palindromes.to(device)
        return self

    def split(self, portion_train: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and validation indices; each palindrome is in exactly one (the set is distinct)."""
        n_train = int(len(self) * portion_train)
        idx = torch.arange(len(self))  # already in random order
        return idx[:n_train], idx[n_train:]

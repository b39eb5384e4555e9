"""MNIST as whole tensors, read with torchvision's own dataset class."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError


def load_mnist(data_dir: str | Path, train: bool = True, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) float32 in [-1, 1] and labels (N,) int64.

    torchvision looks for data_dir/MNIST/raw/*-ubyte and downloads only if they are missing.
    """
    split = "train" if train else "test"
    try:
        ds = datasets.MNIST(root=str(data_dir), train=train, download=download)
    except Exception as exc:  # offline download failures surface as URLError, RuntimeError, OSError...
        raise UserError(
            f"--data_dir {data_dir}: MNIST {split} set not found and could not be downloaded "
            f"({type(exc).__name__}); put the four *-ubyte files in {Path(data_dir) / 'MNIST' / 'raw'} "
            f"or point --data_dir at a folder that has MNIST/raw/"
        ) from None
    # One conversion for the whole set: no per-sample transforms in the training loop.
    images = ds.data.unsqueeze(1).float().div_(127.5).sub_(1.0)
    return images, ds.targets.long()

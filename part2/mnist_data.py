"""MNIST as whole tensors, read with torchvision's own dataset class after checking the raw files ourselves.

torchvision reports a damaged file the same way as a missing one (it tries to download), so the
IDX headers and sizes are checked first: a damaged file is named as such, not as a download problem.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import torch

from cs324_utils import UserError

# split -> (images file, labels file), the names torchvision reads under MNIST/raw/
RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX: unsigned bytes, 3 and 1 dimensions
SIDE = 28
N_CLASSES = 10
NOT_DOWNLOAD = "this is not a download problem: replace the file, or delete it to download MNIST again"


def raw_folder(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def idx_count(path: Path, images: bool) -> int:
    """Number of items in an IDX file whose magic number, shape and size are those of MNIST; else a UserError."""
    header_len = 16 if images else 8
    try:
        with open(path, "rb") as f:
            head = f.read(header_len)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise UserError(f"cannot read MNIST file {path}: {exc.strerror or type(exc).__name__}") from None
    damaged = f"MNIST file {path} is damaged"
    if len(head) < header_len:
        raise UserError(f"{damaged}: {size} bytes, shorter than its {header_len}-byte header; {NOT_DOWNLOAD}")
    magic, n, *dims = struct.unpack(f">{header_len // 4}I", head)
    expected = IMAGES_MAGIC if images else LABELS_MAGIC
    if magic != expected or (images and dims != [SIDE, SIDE]):
        raise UserError(f"{damaged}: its header (magic {magic}, shape {[n, *dims]}) is not that of an MNIST "
                        f"{'image' if images else 'label'} file; {NOT_DOWNLOAD}")
    want = header_len + n * (SIDE * SIDE if images else 1)
    if size != want:
        raise UserError(f"{damaged}: {size} bytes where its header promises {n} items ({want} bytes), "
                        f"so it is truncated or padded; {NOT_DOWNLOAD}")
    return n


def check_raw_files(data_dir: str | Path, split: str) -> list[str]:
    """The raw files torchvision needs that are missing; a present file of `split` that is damaged is a UserError."""
    raw = raw_folder(data_dir)
    missing = [name for pair in RAW_FILES.values() for name in pair if not (raw / name).is_file()]
    images, labels = RAW_FILES[split]
    if images in missing or labels in missing:
        return missing
    n_images, n_labels = idx_count(raw / images, images=True), idx_count(raw / labels, images=False)
    if n_images != n_labels:
        raise UserError(f"MNIST {split} files in {raw} do not match: {n_images} images but {n_labels} labels; "
                        f"{NOT_DOWNLOAD}")
    return missing


def load_mnist(data_dir: str | Path, train: bool = True, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) float32 in [-1, 1] and labels (N,) int64.

    torchvision looks for data_dir/MNIST/raw/*-ubyte and downloads only if one of the four is missing.
    """
    split = "train" if train else "test"
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise UserError(f"--data_dir {data_dir} is a file; give the folder that holds MNIST/raw/")
    missing = check_raw_files(data_dir, split)
    where = f"put the four *-ubyte files in {raw_folder(data_dir)} or point --data_dir at a folder that has MNIST/raw/"
    if missing and not download:
        raise UserError(f"--data_dir {data_dir}: MNIST file {missing[0]} not found and downloading is off; {where}")
    from torchvision import datasets  # about a second to import: paid only by a command that reads MNIST

    try:
        ds = datasets.MNIST(root=str(data_dir), train=train, download=download)
    except Exception as exc:  # offline download failures surface as URLError, RuntimeError, OSError...
        problem = f"{missing[0]} not found and could not be downloaded" if missing else "could not be read"
        raise UserError(f"--data_dir {data_dir}: MNIST {split} set: {problem} ({type(exc).__name__}); {where}") from None
    labels = ds.targets.long()
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < N_CLASSES:
        raise UserError(f"MNIST {split} labels in {raw_folder(data_dir)} are outside 0..9; {NOT_DOWNLOAD}")
    # One conversion for the whole set: no per-sample transforms in the training loop.
    images = ds.data.unsqueeze(1).float().div_(127.5).sub_(1.0)
    return images, labels

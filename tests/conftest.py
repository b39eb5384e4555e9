"""Test setup: both parts importable, and a tiny MNIST in torchvision's on-disk format."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # cs324_utils
for part in ("part1", "part2"):
    sys.path.insert(0, str(ROOT / part))

SHARED_MNIST = ROOT.parent / "shared" / "mnist"


def write_fake_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """Write random IDX files under root/MNIST/raw/ that torchvision.datasets.MNIST reads."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return Path(root)


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    """A data_dir holding a tiny random MNIST (256 train, 64 test images)."""
    return write_fake_mnist(tmp_path / "data")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding 64 random training images (4 batches of 16), shared by a test module."""
    return write_fake_mnist(tmp_path_factory.mktemp("tiny"), n_train=64, n_test=16)

"""Small helpers shared by the part 2 scripts: errors, device, seeding, atomic saves."""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem with what the user asked for; the CLI prints it as one line and exits 2."""


def pick_device(name: str = "auto") -> torch.device:
    """Resolve --device once; refuse a device that is not present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
        return torch.device("cuda")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("--device mps: MPS is not available on this machine (use --device cpu or auto)")
        return torch.device("mps")
    raise UserError(f"--device: unknown device {name!r} (choose auto, cpu, cuda or mps)")


def set_seed(seed: int) -> None:
    """Seed every RNG a run touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then rename over path: a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json(obj: Any, path: str | Path) -> None:
    """JSON, atomically, so a reader never sees half a file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def safe_load(path: str | Path, what: str = "checkpoint") -> dict:
    """torch.load(weights_only=True) with one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and unpickler errors all mean "not a checkpoint of ours"
        raise UserError(f"{what} {path} is corrupt or not a PyTorch file ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} {path} does not hold a dictionary of tensors")
    return obj


def repo_relative(path: str | Path) -> str:
    """A path relative to the repository when inside it, so committed JSON holds no machine-specific paths."""
    path = Path(path).resolve()
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)

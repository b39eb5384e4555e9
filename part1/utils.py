"""Small helpers for the part 1 scripts: errors, device, seeding, atomic writes."""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem with what the user asked for; CLIs print it as one line and exit 2."""


def pick_device(name: str = "auto") -> torch.device:
    """Resolve --device once; refuse a device that is not present."""
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if name not in available:
        raise UserError(f"--device: unknown device {name!r} (choose auto, cpu, cuda or mps)")
    if not available[name]:
        raise UserError(f"--device {name}: not available on this machine (use --device cpu or auto)")
    return torch.device(name)


def set_seed(seed: int) -> None:
    """Seed every RNG a run touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write(path: str | Path, write: Any) -> None:
    """Call write(tmp_path), then rename over path: an interrupted run never leaves a torn file."""
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


def write_json(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))

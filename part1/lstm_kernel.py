"""The fused element-wise LSTM step of lstm_cell.c, compiled on first use and called through ctypes.

The C file has no dependencies, so building it takes a fraction of a second with any C compiler
(`cc`, or $CC). Where there is none, or the build fails, `load()` returns None and lstm_bptt.py
does the same arithmetic with PyTorch ops: same results, slower on the CPU.
The kernel is float32 and CPU only; other devices and dtypes always take the PyTorch ops.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent / "lstm_cell.c"
# Tried in order: -march=native for the widest vectors (gcc, clang on x86), -mcpu=native (clang on
# Arm), then portable code. -fno-trapping-math lets the branch-free clamps in exp_approx vectorise.
FLAG_SETS = (["-march=native"], ["-mcpu=native"], [])
COMMON = ["-O3", "-std=c99", "-fno-trapping-math", "-shared", "-fPIC"]

_lib: ctypes.CDLL | None = None
_tried = False


def _build() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    # A fresh folder per process: nothing cached can be stale or built for another CPU.
    out = Path(tempfile.mkdtemp(prefix="lstm_cell_")) / "lstm_cell.so"
    for flags in FLAG_SETS:
        cmd = [compiler, *COMMON, *flags, str(SOURCE), "-o", str(out), "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            break
    else:
        return None
    lib = ctypes.CDLL(str(out))
    shutil.rmtree(out.parent, ignore_errors=True)  # once loaded, the file is no longer needed (POSIX)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.lstm_forward_step.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_backward_step.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_forward_step.restype = lib.lstm_backward_step.restype = None
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled kernel (built once per process), or None where it cannot be had."""
    global _lib, _tried
    if not _tried:
        _tried = True
        _lib = _build()
    return _lib


def usable(t: torch.Tensor) -> bool:
    """Whether the kernel can handle tensors like t (float32 on the CPU) and is available."""
    return t.device.type == "cpu" and t.dtype == torch.float32 and load() is not None


def forward_step(gates: torch.Tensor, c_prev: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor,
                 h: torch.Tensor) -> None:
    """In place: gates (B, 4H) pre-activations -> g, i, f, o; writes c, tanh(c), h (B, H). All contiguous."""
    B, H = c.shape
    _lib.lstm_forward_step(B, H, gates.data_ptr(), c_prev.data_ptr(), c.data_ptr(), tanh_c.data_ptr(),
                           h.data_ptr())


def backward_step(gates: torch.Tensor, c_prev: torch.Tensor, tanh_c: torch.Tensor, dh: torch.Tensor,
                  dc: torch.Tensor, grad_a: torch.Tensor) -> None:
    """Writes grad_a (B, 4H) = dL/d(pre-activations) and turns dc from dL/dc_t into dL/dc_{t-1}."""
    B, H = dc.shape
    _lib.lstm_backward_step(B, H, gates.data_ptr(), c_prev.data_ptr(), tanh_c.data_ptr(), dh.data_ptr(),
                            dc.data_ptr(), grad_a.data_ptr())

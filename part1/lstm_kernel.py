"""CPU kernels of the LSTM fast path: the fused element-wise step of lstm_cell.c (compiled on first
use, called through ctypes) and oneDNN matmuls with a pre-packed weight.

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
from typing import Callable

import torch

SOURCE = Path(__file__).resolve().parent / "lstm_cell.c"
# Tried in order: -march=native for the widest vectors (gcc, clang on x86), -mcpu=native (clang on
# Arm), then portable code. The maths flags let the clamps and the polynomial in exp_approx vectorise
# into min/max and fused multiply-adds (about 3x faster than without; see lstm_cell.c on NaN).
FLAG_SETS = (["-march=native"], ["-mcpu=native"], [])
COMMON = ["-O3", "-std=c99", "-ffp-contract=fast", "-fno-trapping-math", "-ffinite-math-only", "-fno-signed-zeros",
          "-shared", "-fPIC"]

_lib: ctypes.CDLL | None = None
_tried = False
_onednn: bool | None = None
_packed: dict[tuple[int, int, int], torch.Tensor] = {}  # (N, K, batch size) -> a weight in oneDNN's layout


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
    lib.lstm_forward_step.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_backward_step.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr]
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


def forward_step(gates: torch.Tensor, hw: torch.Tensor, c_prev: torch.Tensor, c: torch.Tensor,
                 tanh_c: torch.Tensor, h: torch.Tensor) -> None:
    """gates (B, 4H): W_x x_t + b in, g, i, f, o out; hw (B, 4H) = W_h h_{t-1}; writes c, tanh(c), h (B, H).

    All contiguous float32 on the CPU.
    """
    B, H = c.shape
    _lib.lstm_forward_step(B, H, gates.data_ptr(), hw.data_ptr(), c_prev.data_ptr(), c.data_ptr(),
                           tanh_c.data_ptr(), h.data_ptr())


def backward_step(gates: torch.Tensor, c_prev: torch.Tensor, tanh_c: torch.Tensor, dh: torch.Tensor,
                  dc: torch.Tensor) -> None:
    """In place: gates (B, 4H) g, i, f, o -> dL/d(pre-activations); dc from dL/dc_t to dL/dc_{t-1}."""
    B, H = dc.shape
    _lib.lstm_backward_step(B, H, gates.data_ptr(), c_prev.data_ptr(), tanh_c.data_ptr(), dh.data_ptr(),
                            dc.data_ptr())


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's packed linear (x86 and Arm CPU builds) and it agrees with mm,
    also after a new weight is copied into the packed buffer."""
    global _onednn
    if _onednn is None:
        try:
            rng = torch.Generator().manual_seed(0)  # not the global stream: seeded training stays as it was
            x = torch.randn(8, 16, generator=rng)
            w, w2 = torch.randn(32, 16, generator=rng), torch.randn(32, 16, generator=rng)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 8)
            out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            packed.copy_(w2.to_mkldnn())
            out2 = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            _onednn = (torch.allclose(out, x @ w.t(), rtol=1e-5, atol=1e-5)
                       and torch.allclose(out2, x @ w2.t(), rtol=1e-5, atol=1e-5))
        except (AttributeError, RuntimeError):
            _onednn = False
    return _onednn


def _pack(weight: torch.Tensor, batch_size: int) -> torch.Tensor:
    """weight (N, K) in oneDNN's layout for batches of batch_size rows, in a buffer kept per shape.

    Packing from scratch (_reorder_linear_weight) costs several times more than copying into a
    buffer that already has the layout (bench.py's last line times both). Each pack is used only
    within the forward or backward pass that made it, so one buffer per shape is enough (for
    one thread: two threads running LSTMs of the same size at once would need one each).
    """
    key = (*weight.shape, batch_size)
    packed = _packed.get(key)
    if packed is None:
        packed = _packed[key] = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_size)
    else:
        packed.copy_(weight.contiguous().to_mkldnn())
    return packed


def linear(weight: torch.Tensor, batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (B, K) -> x @ weight.T for a fixed float32 CPU weight (N, K).

    PyTorch sends float32 matmuls to MKL, which on some CPUs (AMD ones among them) is about half as
    fast as oneDNN at these small shapes; torch.nn.LSTM itself runs on oneDNN. So the weight is
    packed once into oneDNN's layout (once per forward or backward pass, not per step) and every
    step's product goes through oneDNN, where this torch build has it; elsewhere, torch.mm.
    """
    if onednn_available():
        packed = _pack(weight, batch_size)
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    weight_t = weight.t()
    return lambda x: x @ weight_t

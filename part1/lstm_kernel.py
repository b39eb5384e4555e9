"""CPU layers of the LSTM fast path, and the choice between them on the machine at hand.

Two layers, each with a fast variant and a plain PyTorch one that computes the same numbers:

  cell    "c":      one call of lstm_cell.c per step and direction: the step's product with W_h
                    (its own small matrix kernel) and the element-wise equations, the batch rows
                    split over torch's threads; compiled with the system's C compiler (`cc`, or
                    $CC) on first use and called through ctypes;
          "torch":  the same arithmetic as PyTorch ops (lstm_bptt.cell_forward, _backward_torch),
                    each step's product through the matmul layer:
  matmul  "onednn": the product with W_h through oneDNN with W_h packed in oneDNN's layout, via
                    PRIVATE PyTorch operators (torch.ops.mkldnn._reorder_linear_weight and
                    _linear_pointwise: no stability promise; tested with torch 2.11 and 2.14.1);
          "mm":     torch.mm (MKL or OpenBLAS).
The matmul layer serves the "torch" cell only: the "c" cell does its own products.

Which variant wins depends on the CPU and the thread count (part1/results/bench.txt times them
all on the machine it names). So nothing is assumed: at first use for a shape, both variants are
timed for a few milliseconds (interleaved, the fastest of several rounds, since another job on the
machine only ever adds time: a median under load once picked the cell that is twice as slow
alone; on inputs drawn from a private torch.Generator so the global RNG and thus seeded training
are untouched); the plain variant is kept for the rest of the process only if it is clearly
faster (PLAIN_MARGIN), so that a close call does not flip between runs. `describe()` reports the
choices, their timings and any fallback.

A fast variant that cannot run (no C compiler, a failed build, the private operators missing or
disagreeing with torch.mm) is reported once per process in one line on stderr, and the plain
variant runs instead. Tensors that are not float32 on the CPU are not a fallback: they always take
the PyTorch ops.

Environment variables force a choice (for tests, benchmarks, and bitwise-repeatable runs, since two
runs whose timings pick different variants agree only to float rounding):

    CS324_LSTM_CELL=auto|c|torch        (default auto: timed)
    CS324_LSTM_MATMUL=auto|onednn|mm    (default auto: timed)
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

SOURCE = Path(__file__).resolve().parent / "lstm_cell.c"
# Tried in order: -march=native for the widest vectors (gcc, clang on x86), -mcpu=native (clang on
# Arm), then portable code. The maths flags let the clamps and the polynomial in exp_approx vectorise
# into min/max and fused multiply-adds (about 3x faster than without; see lstm_cell.c on NaN).
FLAG_SETS = (["-march=native"], ["-mcpu=native"], [])
COMMON = ["-O3", "-std=c99", "-ffp-contract=fast", "-fno-trapping-math", "-ffinite-math-only", "-fno-signed-zeros",
          "-shared", "-fPIC"]

LAYERS = {"cell": ("c", "torch"), "matmul": ("onednn", "mm")}  # (fast variant, plain variant)
ENV = {"cell": "CS324_LSTM_CELL", "matmul": "CS324_LSTM_MATMUL"}
# What a fallback costs, from part1/results/bench.txt (batch 128, hidden 128, an AMD EPYC, 2 threads).
COST = {"cell": "the cell runs as PyTorch ops: training steps about 1.7-2x slower (bench.py)",
        "matmul": "the PyTorch-ops cell's products run on torch.mm: up to 1.5x slower a product (bench.py)"}
# The plain variant replaces the fast one only when clearly faster: on a close call timing noise
# could otherwise pick differently in two runs on one machine and change a seeded run's rounding.
PLAIN_MARGIN = 0.85
TIMING_BUDGET_S = 0.004  # per decision; at least MIN_ROUNDS rounds whatever it costs
MIN_ROUNDS, MAX_ROUNDS = 5, 40

_lib: ctypes.CDLL | None = None
_tried = False
_openmp = False                          # whether the C cell was built with OpenMP (torch's threads)
_openmp_why = ""                         # if not, why not
_onednn: bool | None = None
_unavailable: dict[str, str] = {}        # layer -> why its fast variant cannot run
_warned: set[str] = set()
_decisions: dict[tuple[str, tuple[int, ...]], dict] = {}  # (layer, shape) -> {"choice", "us"}
_override: dict[str, str] = {}           # set by forcing(); wins over the environment
_packed: dict[tuple[int, int, int], torch.Tensor] = {}  # (N, K, batch size) -> a weight in oneDNN's layout


# --- the C cell ---------------------------------------------------------------------------------

def _build() -> tuple[ctypes.CDLL | None, str]:
    """The compiled cell, or None and the reason it could not be had."""
    global _openmp, _openmp_why
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler found: set CC"
    # A fresh folder per process: nothing cached can be stale or built for another CPU.
    out = Path(tempfile.mkdtemp(prefix="lstm_cell_"))
    try:
        lib, _openmp_why = None, _shared_libgomp()
        if not _openmp_why:
            lib, failure = _compile_and_load(compiler, ["-fopenmp"], out / "lstm_cell_omp.so")
            _openmp_why = "" if lib is not None else f"the build with -fopenmp failed: {failure}"
        if lib is None:
            lib, failure = _compile_and_load(compiler, [], out / "lstm_cell.so")
        if lib is None:
            return None, failure
        _openmp = not _openmp_why
    finally:
        shutil.rmtree(out, ignore_errors=True)  # once loaded, the file is no longer needed (POSIX)
    i64, c_int, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.lstm_forward_step.argtypes = [i64, i64, c_int, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_backward_step.argtypes = [i64, i64, c_int, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_forward_step.restype = lib.lstm_backward_step.restype = None
    return lib, ""


def _compile_and_load(compiler: str, openmp: list[str], out: Path) -> tuple[ctypes.CDLL | None, str]:
    """lstm_cell.c built with the first of FLAG_SETS that compiles, and loaded; or None and why not."""
    for flags in FLAG_SETS:
        cmd = [compiler, *COMMON, *openmp, *flags, str(SOURCE), "-o", str(out), "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"cannot run {compiler}: {exc}"
        if done.returncode == 0:
            break
    else:
        first = (done.stderr.strip().splitlines() or ["no message"])[0][:160]
        return None, f"{compiler} failed to build lstm_cell.c: {first}"
    try:
        return ctypes.CDLL(str(out)), ""
    except OSError as exc:
        return None, f"the built lstm_cell.so does not load: {exc}"


def _shared_libgomp() -> str:
    """'' when a -fopenmp build will run on torch's own OpenMP threads, else why not.

    The loader gives the build the libgomp.so.1 already in the process, if there is one. Where torch
    runs on another runtime (a renamed libgomp copy, libomp, libiomp5), the build would bring a
    second one, whose threads would fight torch's for the cores: the cell is then built for one thread.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "cannot see which OpenMP runtime torch runs on (no /proc/self/maps)"
    names = {Path(line.split()[-1]).name for line in maps.splitlines() if "/" in line}
    if "libgomp.so.1" in names:
        return ""
    others = sorted(n for n in names if any(key in n for key in ("gomp", "libomp", "iomp")))
    return f"torch's OpenMP runtime is {', '.join(others) or 'not loaded'}, not a libgomp.so.1 to share"


def load() -> ctypes.CDLL | None:
    """The compiled cell (built once per process), or None where it cannot be had (see describe())."""
    global _lib, _tried
    if not _tried:
        _tried = True
        _lib, reason = _build()
        if _lib is None:
            _unavailable["cell"] = reason
    return _lib


def applies(t: torch.Tensor) -> bool:
    """Whether tensors like t (float32 on the CPU) are this module's to run; others take PyTorch ops."""
    return t.device.type == "cpu" and t.dtype == torch.float32


def forward_step(gates: torch.Tensor, h_prev: torch.Tensor | None, W_hT: torch.Tensor, c_prev: torch.Tensor,
                 c: torch.Tensor, tanh_c: torch.Tensor, h: torch.Tensor) -> None:
    """gates (B, 4H): W_x x_t + b in, g, i, f, o out, after adding h_prev W_h^T (None: h_0 = 0);
    W_hT is W_h^T (H, 4H); writes c, tanh(c), h (B, H). All contiguous float32 on the CPU; load()
    must have succeeded."""
    B, H = c.shape
    forward_step_at(B, H, gates.data_ptr(), 0 if h_prev is None else h_prev.data_ptr(), W_hT.data_ptr(),
                    c_prev.data_ptr(), c.data_ptr(), tanh_c.data_ptr(), h.data_ptr())


def step_address(block: torch.Tensor) -> Callable[[int], int]:
    """t -> the address of block[t] for a contiguous (T, ...) block: the time loops pass these to the C
    cell instead of making a view of each step (the views cost more than the cell at batch 128)."""
    base, stride = block.data_ptr(), block.stride(0) * block.element_size()
    return lambda t: base + t * stride


def forward_step_at(B: int, H: int, gates: int, h_prev: int, W_hT: int, c_prev: int, c: int, tanh_c: int,
                    h: int) -> None:
    """forward_step on addresses (step_address) of contiguous float32 blocks; h_prev 0 for h_0 = 0."""
    _lib.lstm_forward_step(B, H, torch.get_num_threads(), gates, h_prev or None, W_hT, c_prev, c, tanh_c, h)


def backward_step_at(B: int, H: int, gates: int, c_prev: int, tanh_c: int, dh: int, dc: int, W_h: int,
                     dh_prev: int) -> None:
    """In place: gates (B, 4H) g, i, f, o -> dL/d(pre-activations); dc from dL/dc_t to dL/dc_{t-1};
    writes dh_prev = dL/dh_{t-1} (B, H) unless it is 0. W_h (4H, H) contiguous."""
    _lib.lstm_backward_step(B, H, torch.get_num_threads(), gates, c_prev, tanh_c, dh, dc, W_h, dh_prev or None)


# --- oneDNN through private PyTorch operators ----------------------------------------------------

def _onednn_probe() -> str:
    """'' when the private operators work and agree with torch.mm, also after a new weight is copied
    into a packed buffer; else why not."""
    rng = torch.Generator().manual_seed(0)  # not the global stream: seeded training stays as it was
    x = torch.randn(8, 16, generator=rng)
    w, w2 = torch.randn(32, 16, generator=rng), torch.randn(32, 16, generator=rng)
    try:
        # PRIVATE operators (torch.ops.mkldnn.*); tested with torch 2.11 and 2.14.1.
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 8)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        packed.copy_(w2.to_mkldnn())
        out2 = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    except Exception as exc:  # a missing or changed private operator fails in many ways; any one means "no"
        first = (str(exc).splitlines() or [""])[0][:120]
        return f"torch.ops.mkldnn fails in torch {torch.__version__}: {type(exc).__name__}: {first}"
    agree = all(torch.allclose(got, x @ weight.t(), rtol=1e-5, atol=1e-5) for got, weight in ((out, w), (out2, w2)))
    if not agree:
        return f"torch.ops.mkldnn._linear_pointwise disagrees with torch.mm in torch {torch.__version__}"
    return ""


def onednn_available() -> bool:
    """Whether the private oneDNN operators work here (checked once per process; see describe())."""
    global _onednn
    if _onednn is None:
        reason = _onednn_probe()
        _onednn = not reason
        if reason:
            _unavailable["matmul"] = reason
    return _onednn


def _pack(weight: torch.Tensor, batch_size: int) -> torch.Tensor:
    """weight (N, K) in oneDNN's layout for batches of batch_size rows, in a buffer kept per shape.

    Packing from scratch costs several times more than copying into a buffer that already has the
    layout (bench.py times both). Each pack is used only within the forward or backward pass that
    made it, so one buffer per shape is enough (for one thread: two threads running LSTMs of the
    same size at once would need one each).
    """
    key = (*weight.shape, batch_size)
    packed = _packed.get(key)
    if packed is None:  # PRIVATE operator; tested with torch 2.11 and 2.14.1
        packed = _packed[key] = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_size)
    else:
        packed.copy_(weight.contiguous().to_mkldnn())
    return packed


def linear(weight: torch.Tensor, batch_size: int, impl: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (batch_size, K) -> x @ weight.T for a fixed weight (N, K), through `impl` ("onednn" or "mm";
    None: the choice for this shape). "onednn" packs the weight once here, not once per product."""
    N, K = weight.shape
    if impl is None:
        impl = matmul_choice(batch_size, K, N)
    if impl == "onednn":
        packed = _pack(weight, batch_size)
        # PRIVATE operator; tested with torch 2.11 and 2.14.1
        return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    weight_t = weight.t()
    return lambda x: x @ weight_t


# --- choosing the variants ----------------------------------------------------------------------

def _setting_error(message: str) -> Exception:
    # A UserError where the repository root is importable (every script here), so CLIs print one line.
    try:
        from cs324_utils import UserError
    except ImportError:
        return ValueError(message)
    return UserError(message)


def forced(layer: str) -> str:
    """'auto' or the variant of `layer` that forcing() or the environment asks for."""
    if layer in _override:
        return _override[layer]
    value = os.environ.get(ENV[layer], "auto").strip().lower() or "auto"
    if value not in ("auto", *LAYERS[layer]):
        raise _setting_error(f"{ENV[layer]} must be auto, {' or '.join(LAYERS[layer])}, got {value!r}")
    return value


def check_environment() -> None:
    """Refuse a bad CS324_LSTM_* value now, at a script's door, rather than at the first forward."""
    for layer in LAYERS:
        forced(layer)


@contextlib.contextmanager
def forcing(cell: str = "auto", matmul: str = "auto") -> Iterator[None]:
    """Within the block, use these variants ('auto': as the environment says) whatever was timed."""
    for layer, value in (("cell", cell), ("matmul", matmul)):
        if value not in ("auto", *LAYERS[layer]):
            raise ValueError(f"forcing: {layer} must be auto, {' or '.join(LAYERS[layer])}, got {value!r}")
    saved = dict(_override)
    _override.update({k: v for k, v in (("cell", cell), ("matmul", matmul)) if v != "auto"})
    try:
        yield
    finally:
        _override.clear()
        _override.update(saved)


def _fast_available(layer: str) -> bool:
    """Whether the fast variant can run; if not, says so once per process on stderr."""
    ok = load() is not None if layer == "cell" else onednn_available()
    if not ok and layer not in _warned:
        _warned.add(layer)
        name = "C cell" if layer == "cell" else "oneDNN matmul"
        print(f"lstm fast path: {name} unavailable ({_unavailable[layer]}); {COST[layer]}", file=sys.stderr, flush=True)
    return ok


def time_interleaved(candidates: dict[str, Callable[[], object]], budget_s: float = TIMING_BUDGET_S,
                     max_rounds: int = MAX_ROUNDS, statistic: Callable[[list[float]], float] = statistics.median
                     ) -> dict[str, float]:
    """Microseconds of each candidate call (`statistic` of the rounds), timed in alternating rounds so
    that a busy moment on the machine hits all of them alike; at least MIN_ROUNDS rounds, then until
    budget_s is spent."""
    for fn in candidates.values():
        fn()  # warm-up: first calls allocate and pick kernels
    times: dict[str, list[float]] = {k: [] for k in candidates}
    names = list(candidates)
    start = time.perf_counter()
    for r in range(max_rounds):
        for k in names if r % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            candidates[k]()
            times[k].append(time.perf_counter() - t0)
        if r + 1 >= MIN_ROUNDS and time.perf_counter() - start > budget_s:
            break
    return {k: 1e6 * statistic(v) for k, v in times.items()}


def decide(layer: str, shape: tuple[int, ...], make_candidates: Callable[[], dict[str, Callable[[], object]]]) -> str:
    """The variant of `layer` to use at `shape`: forced, the plain one if the fast one cannot run,
    else the plain one only if make_candidates() (one call of each variant) times it under
    PLAIN_MARGIN of the fast one's time; timed once and kept."""
    want = forced(layer)
    fast, plain = LAYERS[layer]
    if want == plain or not _fast_available(layer):
        return plain
    if want == fast:
        return fast
    key = (layer, shape)
    if key not in _decisions:
        us = time_interleaved(make_candidates(), statistic=min)
        choice = plain if us[plain] < PLAIN_MARGIN * us[fast] else fast
        _decisions[key] = {"choice": choice, "us": {k: round(v, 1) for k, v in us.items()}}
    return _decisions[key]["choice"]


def matmul_candidates(batch_size: int, K: int, N: int) -> dict[str, Callable[[], object]]:
    """One product (batch_size, K) x (K, N) each way, on inputs from a private generator."""
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, K, generator=rng)
    weight = torch.randn(N, K, generator=rng)
    return {impl: (lambda f=linear(weight, batch_size, impl): f(x)) for impl in LAYERS["matmul"]}


def matmul_choice(batch_size: int, K: int, N: int) -> str:
    """'onednn' or 'mm' for products (batch_size, K) x (K, N) of float32 CPU tensors."""
    return decide("matmul", (batch_size, K, N), lambda: matmul_candidates(batch_size, K, N))


def describe(batch_size: int | None = None, hidden_dim: int | None = None,
             device: str | torch.device = "cpu") -> dict:
    """The fast path's variants for a run's log and metrics.json.

    Given the batch and hidden sizes of a CPU run, first makes the choices its training steps will
    make (kept, so training reuses them: a few milliseconds). Returns {"cell", "matmul"} (a variant,
    "a+b" where shapes chose differently, or "undecided"; matmul "c" with the C cell, which does its
    own products), how each was chosen, the timings in
    microseconds per shape, and the reason for each fallback.
    """
    if torch.device(device).type != "cpu":
        return {"cell": "torch", "matmul": "mm", "how": {"cell": "not a CPU run", "matmul": "not a CPU run"},
                "timings_us": {}, "fallbacks": {}}
    if batch_size is not None and hidden_dim is not None:
        import lstm_bptt  # here, not at the top: lstm_bptt imports this module
        lstm_bptt.plan(batch_size, hidden_dim)
    summary, how = {}, {}
    for layer, (fast, plain) in LAYERS.items():
        want = forced(layer)
        if want == plain or (want == fast and _fast_available(layer)):
            summary[layer], how[layer] = want, "forced" + ("" if layer in _override else f" by {ENV[layer]}")
        elif layer in _unavailable:
            summary[layer], how[layer] = plain, "fallback"
        else:
            chosen = sorted({d["choice"] for (lay, _), d in _decisions.items() if lay == layer})
            summary[layer], how[layer] = "+".join(chosen) or "undecided", "timed"
    if summary["cell"] == "c":  # the C cell does its own products; the matmul layer serves only the other
        summary["matmul"], how["matmul"] = "c", "in the C cell, " + (
            "on torch's OpenMP threads" if _openmp else f"on one thread: {_openmp_why}")
    timings = {f"{layer} {'x'.join(map(str, shape))}": d["us"] for (layer, shape), d in _decisions.items()}
    return {**summary, "how": how, "timings_us": timings,
            "fallbacks": dict(_unavailable)}

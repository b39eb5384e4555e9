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
all on the machine it names). So nothing is assumed: the choices are made in one place,
lstm_bptt.plan, which asks `decide` for each layer. At the first request for a shape, `decide`
times both variants for a few milliseconds, interleaved, and compares the fastest of several
rounds of each: another job on the machine only ever adds time, so the minimum measures the
variant itself where a median measures the load as well. The inputs come from a private
torch.Generator, so the global RNG and thus seeded training are untouched. The plain variant is
kept for the rest of the process only if it is clearly faster (PLAIN_MARGIN), so that a close
call does not flip between runs. `describe()` reports the choices, their timings and any
fallback; it chooses nothing.

A fast variant that cannot run (no C compiler, a failed build, the private operators missing or
disagreeing with torch.mm) is reported once per process in one line on stderr, and the plain
variant runs instead. Tensors that are not float32 on the CPU are not a fallback: they always take
the PyTorch ops.

Environment variables force a choice (for tests, benchmarks, and bitwise-repeatable runs, since two
runs whose timings pick different variants agree only to float rounding):

    CS324_LSTM_CELL=auto|c|torch        (default auto: timed)
    CS324_LSTM_MATMUL=auto|onednn|mm    (default auto: timed)

All that the module learns in a process (the built cell, the probes, the fallbacks, the timed
choices, the packed weights) lives in one object, KERNELS; a test swaps in a fresh Kernels().
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

SOURCE = Path(__file__).resolve().parent / "lstm_cell.c"
# Tried in order: -march=native for the widest vectors (gcc, clang on x86), -mcpu=native (clang on
# Arm), then portable code. The maths flags let the clamps and the polynomial in exp_approx vectorise
# into min/max and fused multiply-adds (about 3x faster than without; see lstm_cell.c on NaN).
FLAG_SETS = (["-march=native"], ["-mcpu=native"], [])
BUILD_TIMEOUT_S = 60.0  # a compiler that takes longer is taken to hang: the C cell is then not used
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


@dataclass
class Kernels:
    """What the fast path has learnt in this process; KERNELS is the one instance."""
    lib: ctypes.CDLL | None = None       # the compiled C cell
    build_tried: bool = False            # a failed build is not retried
    openmp: bool = False                 # whether the C cell was built with OpenMP (torch's threads)
    openmp_why: str = ""                 # if not, why not
    onednn: bool | None = None           # whether the private oneDNN operators work; None: not probed yet
    unavailable: dict[str, str] = field(default_factory=dict)  # layer -> why its fast variant cannot run
    warned: set[str] = field(default_factory=set)              # layers whose fallback has been reported on stderr
    decisions: dict[tuple[str, tuple[int, ...]], dict] = field(default_factory=dict)  # (layer, shape) -> {"choice", "us"}
    override: dict[str, str] = field(default_factory=dict)     # set by forcing(); wins over the environment
    packed: dict[tuple[int, int, int], torch.Tensor] = field(default_factory=dict)  # (N, K, batch size) -> oneDNN layout


KERNELS = Kernels()


# --- the C cell ---------------------------------------------------------------------------------

def _build() -> tuple[ctypes.CDLL | None, str, str]:
    """(the compiled cell or None, why not, why it runs on one thread rather than torch's OpenMP threads);
    '' where there is nothing to say."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler found: set CC", ""
    # A fresh folder per process: nothing cached can be stale or built for another CPU.
    out = Path(tempfile.mkdtemp(prefix="lstm_cell_"))
    try:
        lib, openmp_why = None, _shared_libgomp()
        if not openmp_why:
            lib, failure = _compile_and_load(compiler, ["-fopenmp"], out / "lstm_cell_omp.so")
            openmp_why = "" if lib is not None else f"the build with -fopenmp failed: {failure}"
        if lib is None:
            lib, failure = _compile_and_load(compiler, [], out / "lstm_cell.so")
        if lib is None:
            return None, failure, openmp_why
    finally:
        shutil.rmtree(out, ignore_errors=True)  # once loaded, the file is no longer needed (POSIX)
    i64, c_int, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.lstm_forward.argtypes = [i64, i64, i64, c_int, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_backward.argtypes = [i64, i64, i64, c_int, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_forward.restype = lib.lstm_backward.restype = None
    return lib, "", openmp_why


def _compile_and_load(compiler: str, openmp: list[str], out: Path) -> tuple[ctypes.CDLL | None, str]:
    """lstm_cell.c built with the first of FLAG_SETS that compiles, and loaded; or None and why not."""
    for flags in FLAG_SETS:
        cmd = [compiler, *COMMON, *openmp, *flags, str(SOURCE), "-o", str(out), "-lm"]
        try:
            code, stderr = _run_with_time_limit(cmd, BUILD_TIMEOUT_S)
        except OSError as exc:
            return None, f"cannot run {compiler}: {exc}"
        if code is None:
            return None, f"{compiler} did not finish building lstm_cell.c within {BUILD_TIMEOUT_S:g} s"
        if code == 0:
            break
    else:
        first = (stderr.strip().splitlines() or ["no message"])[0][:160]
        return None, f"{compiler} failed to build lstm_cell.c: {first}"
    try:
        return ctypes.CDLL(str(out)), ""
    except OSError as exc:
        return None, f"the built lstm_cell.so does not load: {exc}"


def _run_with_time_limit(cmd: list[str], seconds: float) -> tuple[int | None, str]:
    """(exit code, stderr) of cmd, or (None, "") when it outlives `seconds`. It runs in a session of its
    own, which is killed whole: a compiler's child that hangs would otherwise keep its pipe open, and
    the wait for its output would never end."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=seconds)
        except BaseException as exc:  # the time limit, or a stop signal: the compiler must not outlive us
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                return None, ""
            raise
        err.seek(0)
        return code, err.read().decode(errors="replace")


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
    k = KERNELS
    if not k.build_tried:
        k.build_tried = True
        k.unavailable["cell"] = "the build was interrupted"  # until it ends: an interrupted build is not retried
        k.lib, reason, k.openmp_why = _build()
        k.openmp = k.lib is not None and not k.openmp_why
        if k.lib is not None:
            del k.unavailable["cell"]
        else:
            k.unavailable["cell"] = reason
    return k.lib


def applies(t: torch.Tensor) -> bool:
    """Whether tensors like t (float32 on the CPU) are this module's to run; others take PyTorch ops."""
    return t.device.type == "cpu" and t.dtype == torch.float32


def forward(gates: torch.Tensor, W_hT: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor, h: torch.Tensor) -> None:
    """Equations (1)-(6) for all steps: gates (T, B, 4H) holds W_x x_t + b and leaves holding g, i, f, o;
    c, h (T + 1, B, H) with c[0] = h[0] = 0 and tanh_c (T, B, H) are filled in; W_hT is W_h^T (H, 4H).
    All contiguous float32 on the CPU; load() must have succeeded."""
    T, B, H4 = gates.shape
    KERNELS.lib.lstm_forward(T, B, H4 // 4, torch.get_num_threads(), gates.data_ptr(), W_hT.data_ptr(),
                             c.data_ptr(), tanh_c.data_ptr(), h.data_ptr())


def backward(gates: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor, grad_h: torch.Tensor,
             W_h: torch.Tensor) -> torch.Tensor:
    """In place: gates (T, B, 4H) holding g, i, f, o becomes dL/d(pre-activations), from dL/dh_T = grad_h
    (B, H); returned. W_h (4H, H) contiguous."""
    T, B, H4 = gates.shape
    dh, spare, dc = grad_h.clone(), torch.empty_like(grad_h), torch.zeros_like(grad_h)
    KERNELS.lib.lstm_backward(T, B, H4 // 4, torch.get_num_threads(), gates.data_ptr(), c.data_ptr(),
                              tanh_c.data_ptr(), dh.data_ptr(), spare.data_ptr(), dc.data_ptr(), W_h.data_ptr())
    return gates


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
    k = KERNELS
    if k.onednn is None:
        reason = _onednn_probe()
        k.onednn = not reason
        if reason:
            k.unavailable["matmul"] = reason
    return k.onednn


def _pack(weight: torch.Tensor, batch_size: int) -> torch.Tensor:
    """weight (N, K) in oneDNN's layout for batches of batch_size rows, in a buffer kept per shape.

    Packing from scratch costs several times more than copying into a buffer that already has the
    layout (bench.py times both). Each pack is used only within the forward or backward pass that
    made it, so one buffer per shape is enough (for one thread: two threads running LSTMs of the
    same size at once would need one each).
    """
    key, kept = (*weight.shape, batch_size), KERNELS.packed
    packed = kept.get(key)
    if packed is None:  # PRIVATE operator; tested with torch 2.11 and 2.14.1
        packed = kept[key] = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_size)
    else:
        packed.copy_(weight.contiguous().to_mkldnn())
    return packed


def linear(weight: torch.Tensor, batch_size: int, impl: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (batch_size, K) -> x @ weight.T for a fixed weight (N, K), through `impl` ("onednn" or "mm", as
    lstm_bptt.plan chose). "onednn" packs the weight once here, not once per product."""
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
    if layer in KERNELS.override:
        return KERNELS.override[layer]
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
    override = KERNELS.override
    saved = dict(override)
    override.update({k: v for k, v in (("cell", cell), ("matmul", matmul)) if v != "auto"})
    try:
        yield
    finally:
        override.clear()
        override.update(saved)


def _fast_available(layer: str) -> bool:
    """Whether the fast variant can run; if not, says so once per process on stderr."""
    ok = load() is not None if layer == "cell" else onednn_available()
    if not ok and layer not in KERNELS.warned:
        KERNELS.warned.add(layer)
        name = "C cell" if layer == "cell" else "oneDNN matmul"
        why = KERNELS.unavailable[layer]
        print(f"lstm fast path: {name} unavailable ({why}); {COST[layer]}", file=sys.stderr, flush=True)
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
    PLAIN_MARGIN of the fast one's time; timed once and kept. Called by lstm_bptt.plan, the one
    place the choices are made."""
    want = forced(layer)
    fast, plain = LAYERS[layer]
    if want == plain or not _fast_available(layer):
        return plain
    if want == fast:
        return fast
    key, decisions = (layer, shape), KERNELS.decisions
    if key not in decisions:
        us = time_interleaved(make_candidates(), statistic=min)
        choice = plain if us[plain] < PLAIN_MARGIN * us[fast] else fast
        decisions[key] = {"choice": choice, "us": {k: round(v, 1) for k, v in us.items()}}
    return decisions[key]["choice"]


def matmul_candidates(batch_size: int, K: int, N: int) -> dict[str, Callable[[], object]]:
    """One product (batch_size, K) x (K, N) each way, on inputs from a private generator."""
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, K, generator=rng)
    weight = torch.randn(N, K, generator=rng)
    return {impl: (lambda f=linear(weight, batch_size, impl): f(x)) for impl in LAYERS["matmul"]}


def matmul_choice(batch_size: int, K: int, N: int) -> str:
    """'onednn' or 'mm' for products (batch_size, K) x (K, N) of float32 CPU tensors (for lstm_bptt.plan)."""
    return decide("matmul", (batch_size, K, N), lambda: matmul_candidates(batch_size, K, N))


# --- reporting ----------------------------------------------------------------------------------

def describe(device: str | torch.device = "cpu") -> dict:
    """The fast path's variants so far, for a run's log and metrics.json; times nothing (lstm_bptt.plan
    makes the choices).

    Returns {"cell", "matmul"} (a variant, "a+b" where shapes chose differently, or "undecided"; matmul
    "c" with the C cell, which does its own products), how each was chosen, the timings in
    microseconds per shape, and the reason for each fallback.
    """
    if torch.device(device).type != "cpu":
        return {"cell": "torch", "matmul": "mm", "how": {"cell": "not a CPU run", "matmul": "not a CPU run"},
                "timings_us": {}, "fallbacks": {}}
    k = KERNELS
    summary, how = {}, {}
    for layer, (fast, plain) in LAYERS.items():
        want = forced(layer)
        if want == plain or (want == fast and _fast_available(layer)):
            summary[layer], how[layer] = want, "forced" + ("" if layer in k.override else f" by {ENV[layer]}")
        elif layer in k.unavailable:
            summary[layer], how[layer] = plain, "fallback"
        else:
            chosen = sorted({d["choice"] for (lay, _), d in k.decisions.items() if lay == layer})
            summary[layer], how[layer] = "+".join(chosen) or "undecided", "timed"
    if summary["cell"] == "c":  # the C cell does its own products; the matmul layer serves only the other
        summary["matmul"], how["matmul"] = "c", "in the C cell, " + (
            "on torch's OpenMP threads" if k.openmp else f"on one thread: {k.openmp_why}")
    timings = {f"{layer} {'x'.join(map(str, shape))}": d["us"] for (layer, shape), d in k.decisions.items()}
    return {**summary, "how": how, "timings_us": timings, "fallbacks": dict(k.unavailable)}

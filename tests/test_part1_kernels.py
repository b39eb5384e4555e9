"""Part 1's LSTM fast path: its layers work where CI runs, fall back loudly, and are chosen by timing."""
import ast
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import bench
import lstm_bptt
import lstm_kernel
from cs324_utils import UserError
from lstm import LSTM

# The kind of machine CI runs on: there every layer of the fast path must work.
CI_KIND = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def c_compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.fixture
def fresh(monkeypatch):
    """lstm_kernel as if newly imported (no build tried, nothing probed, warned or timed); restored afterwards."""
    monkeypatch.setattr(lstm_kernel, "KERNELS", lstm_kernel.Kernels())
    for var in lstm_kernel.ENV.values():
        monkeypatch.delenv(var, raising=False)


def part1_imports() -> dict[str, set[str]]:
    """module -> the modules of part1 it imports, at the top or inside a function."""
    files = {p.stem: p for p in Path(lstm_kernel.__file__).parent.glob("*.py")}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
        graph[name] = found & files.keys()
    return graph


def test_no_module_of_part1_imports_one_that_imports_it_back():
    """The equations, their fast twin and its layers import one way: lstm -> lstm_bptt -> lstm_kernel."""
    graph = part1_imports()
    assert graph["lstm"] == {"lstm_bptt"} and graph["lstm_bptt"] == {"lstm_kernel"} and not graph["lstm_kernel"]
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} imports a module that imports {start} back"
            if name not in seen:
                seen.add(name)
                todo += graph[name]


def test_the_state_is_one_object(fresh, monkeypatch, capsys):
    """All the module learns lives in KERNELS: a fresh Kernels() forgets every fallback, warning, choice
    and forcing (a module global left behind would survive the swap)."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    lstm_bptt.plan(4, 8)
    with lstm_kernel.forcing(matmul="mm"):
        monkeypatch.setattr(lstm_kernel, "KERNELS", lstm_kernel.Kernels())
        assert lstm_kernel.forced("matmul") == "auto"
    info = lstm_kernel.describe()
    assert (info["cell"], info["matmul"], info["timings_us"], info["fallbacks"]) == ("undecided", "undecided", {}, {})
    lstm_bptt.plan(4, 8)
    assert capsys.readouterr().err.count("C cell unavailable") == 2  # once per state object


def lstm(**kw) -> LSTM:
    torch.manual_seed(1)  # the same weights every time
    return LSTM(6, 1, 8, 10, **kw)


def train_twice(model: LSTM) -> torch.Tensor:
    """Logits and dLoss/dW_h of a second forward and backward (the first takes the one-off set-up)."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 6, 1, dtype=model.W_h.dtype), torch.randint(0, 10, (4,))
    for _ in range(2):
        model.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out, y).backward()
    return torch.cat([out.detach().flatten(), model.W_h.grad.flatten()])


@pytest.mark.skipif(not (CI_KIND and c_compiler()), reason="required only on x86-64 Linux with a C compiler")
def test_every_fast_layer_works_on_x86_64_linux(fresh):
    """CI's kind of machine: a torch upgrade or a toolchain change that breaks a layer must turn CI red,
    not quietly make the LSTM slower."""
    assert lstm_kernel.load() is not None, lstm_kernel.describe()["fallbacks"].get("cell")
    assert lstm_kernel.KERNELS.openmp, "the C cell was built without OpenMP: it would run on one thread"
    assert lstm_kernel.onednn_available(), lstm_kernel.describe()["fallbacks"].get("matmul")


def test_missing_compiler_is_reported_once_and_changes_nothing(fresh, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with lstm_kernel.forcing(matmul="mm"):
        fast = train_twice(lstm())
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("lstm fast path: C cell unavailable (cannot run /nonexistent/cc")
    assert "PyTorch ops" in err[0] and "slower" in err[0]
    info = lstm_kernel.describe()
    assert info["cell"] == "torch" and info["how"]["cell"] == "fallback" and "cell" in info["fallbacks"]
    torch.testing.assert_close(fast, train_twice(lstm(hand_bptt=False)), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("broken", ["missing", "disagrees"])
def test_broken_private_onednn_operator_is_reported_once(fresh, monkeypatch, capsys, broken):
    def op(x, w, *rest):
        if broken == "missing":
            raise RuntimeError("No such operator mkldnn::_linear_pointwise")
        return torch.zeros(x.shape[0], 32)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", op)
    with lstm_kernel.forcing(cell="torch"):
        train_twice(lstm())
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("lstm fast path: oneDNN matmul unavailable (") and "torch.mm" in err[0]
    assert ("disagrees with torch.mm" in err[0]) == (broken == "disagrees")
    assert lstm_kernel.describe()["matmul"] == "mm"


def test_forcing_a_missing_layer_falls_back_loudly(fresh, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("CS324_LSTM_CELL", "c")
    assert lstm_bptt.plan(4, 8)[0] == "torch"
    assert "C cell unavailable" in capsys.readouterr().err


def test_non_float32_or_forced_plain_is_not_a_fallback(fresh, monkeypatch, capsys):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    train_twice(lstm().double())  # float64 takes the PyTorch ops: nothing to report
    with lstm_kernel.forcing("torch", "mm"):
        train_twice(lstm())        # asked for by name: nothing to report
    assert capsys.readouterr().err == ""
    assert not lstm_kernel.KERNELS.build_tried and lstm_kernel.KERNELS.onednn is None  # nothing built or probed


@pytest.mark.parametrize("cell", ["c", "torch"])
@pytest.mark.parametrize("matmul", ["onednn", "mm"])
def test_environment_and_forcing_choose_the_variants(fresh, monkeypatch, cell, matmul):
    if (cell == "c" and lstm_kernel.load() is None) or (matmul == "onednn" and not lstm_kernel.onednn_available()):
        pytest.skip("that variant is not available here")
    monkeypatch.setenv("CS324_LSTM_CELL", cell)
    monkeypatch.setenv("CS324_LSTM_MATMUL", matmul)
    used = "c" if cell == "c" else matmul  # the C cell does its own products, whatever the matmul setting
    assert lstm_bptt.plan(4, 8) == (cell, used, used)
    info = lstm_kernel.describe()
    assert (info["cell"], info["matmul"]) == (cell, used) and info["how"]["cell"] == "forced by CS324_LSTM_CELL"
    other = {"c": "torch", "torch": "c"}[cell]
    if other == "torch" or lstm_kernel.load() is not None:
        with lstm_kernel.forcing(cell=other):  # wins over the environment, for this block only
            assert lstm_bptt.plan(4, 8)[0] == other
    assert lstm_bptt.plan(4, 8)[0] == cell
    assert not lstm_kernel.KERNELS.decisions  # nothing was timed


def test_bad_environment_value_is_one_clear_error(fresh, monkeypatch):
    monkeypatch.setenv("CS324_LSTM_MATMUL", "mkl")
    with pytest.raises(UserError, match="CS324_LSTM_MATMUL must be auto, onednn or mm, got 'mkl'"):
        lstm_kernel.check_environment()
    with pytest.raises(ValueError, match="cell"):
        with lstm_kernel.forcing(cell="cuda"):
            pass


def test_decide_keeps_the_faster_variant_once(fresh):
    if not lstm_kernel.onednn_available():
        pytest.skip("with oneDNN unavailable there is nothing to choose")
    slow = {"onednn": lambda: time.sleep(0.002), "mm": lambda: None}
    assert lstm_kernel.decide("matmul", (1, 2, 3), lambda: slow) == "mm"
    assert lstm_kernel.decide("matmul", (1, 2, 4), lambda: {"onednn": lambda: None, "mm": slow["onednn"]}) == "onednn"

    def fail():
        raise AssertionError("a kept decision must not be timed again")
    assert lstm_kernel.decide("matmul", (1, 2, 3), fail) == "mm"
    assert lstm_kernel.describe()["timings_us"]["matmul 1x2x3"]["onednn"] > 1000


def test_a_close_call_keeps_the_fast_variant(fresh):
    if not lstm_kernel.onednn_available():
        pytest.skip("with oneDNN unavailable there is nothing to choose")
    close = {"onednn": lambda: time.sleep(0.004), "mm": lambda: time.sleep(0.0038)}  # mm 5% faster
    assert lstm_kernel.decide("matmul", (1, 2, 5), lambda: close) == "onednn"


def test_timing_the_choices_is_quick_and_leaves_the_global_rng_alone(fresh):
    lstm_kernel.load(), lstm_kernel.onednn_available()  # the one-off build is not part of a decision
    state = torch.get_rng_state()
    start = time.perf_counter()
    lstm_bptt.plan(32, 32)
    info = lstm_kernel.describe()
    assert time.perf_counter() - start < 2.0  # tens of milliseconds when the machine is not busy
    assert torch.equal(torch.get_rng_state(), state)
    assert (info["cell"], info["matmul"]) in (("c", "c"), ("torch", "onednn"), ("torch", "mm"), ("torch", "mm+onednn"))
    assert set(info["timings_us"]) <= {"cell 32x32", "matmul 32x32x128", "matmul 32x128x32"}
    assert lstm_kernel.describe(device="cuda")["cell"] == "torch"


def test_bench_runs_and_refuses_bad_input(capsys):
    bench.main(["--lengths", "3", "--steps", "1", "--rounds", "1", "--batch_size", "4", "--num_hidden", "4",
                "--layer_seconds", "0.01"])
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "ours, as chosen" in out and "x torch.nn.LSTM" in out
    with pytest.raises(SystemExit) as stop:
        bench.main(["--lengths", "0"])
    assert stop.value.code == 2 and capsys.readouterr().err.count("\n") == 1

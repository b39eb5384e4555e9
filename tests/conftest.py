"""Test setup: both parts importable, and a tiny MNIST in torchvision's on-disk format."""
from __future__ import annotations

import json
import os
import struct
import subprocess
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


# Runs each (script, args) as `python script args` would, but in a fork of one interpreter that has
# already imported torch: the table costs one torch import instead of one per case.
_FORKING_RUNNER = r"""
import json, os, runpy, sys, tempfile, traceback
import torch  # noqa: F401

def start(script, args, env, folder):
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    for fd, name in ((1, "out"), (2, "err")):
        os.dup2(os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT), fd)
    sys.argv, sys.path[0] = [script, *args], os.path.dirname(script)
    os.environ.update(env)
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:  # what the interpreter does with it
        code = exc.code if isinstance(exc.code, int) or exc.code is None else (print(exc.code, file=sys.stderr) or 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code or 0)

cases = json.load(sys.stdin)
folders = [tempfile.mkdtemp() for _ in cases]
pids = [start(script, args, env, folder) for (script, args, env), folder in zip(cases, folders)]
results = []
for pid, folder in zip(pids, folders):
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    read = lambda name: open(os.path.join(folder, name)).read() if os.path.exists(os.path.join(folder, name)) else ""
    results.append({"returncode": code, "stdout": read("out"), "stderr": read("err")})
json.dump(results, sys.stdout)
"""


def run_scripts(cases: list[tuple[str, list[str], dict[str, str]]], cwd: Path = ROOT, timeout: int = 600
                ) -> list[subprocess.CompletedProcess]:
    """Each (script path, arguments, extra environment) as `python script args` would run it, in forks of one
    interpreter that has imported torch once (a table of cases then costs one torch import, not one each)."""
    if not hasattr(os, "fork"):
        return [subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True,
                               timeout=timeout, env={**os.environ, **env}) for script, args, env in cases]
    done = subprocess.run([sys.executable, "-c", _FORKING_RUNNER], input=json.dumps([list(c) for c in cases]),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return [subprocess.CompletedProcess(args, **r) for (_, args, _), r in zip(cases, json.loads(done.stdout))]


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single stderr line of a refused command (asserting there is one, no traceback, and the exit code)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]

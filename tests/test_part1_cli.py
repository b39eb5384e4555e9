"""Part 1 command lines as a user meets them: bad input, earlier runs, Ctrl-C, a full disk."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_scripts

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"train": ROOT / "part1" / "train.py", "compare": ROOT / "part1" / "compare.py"}
# The RNN: what these tests check does not depend on the model, and it starts faster.
TINY = ["--model", "rnn", "--input_length", "6", "--data_size", "600", "--batch_size", "50", "--num_hidden", "16", "--no_progress"]
TINY_SWEEP = ["--lengths", "3", "--seeds", "0", "--max_steps", "4", "--eval_every", "2", "--data_size", "100",
              "--num_hidden", "8", "--models", "rnn"]


def run(script: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS[script]), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr


# (script, arguments, words the one line must hold); {tmp} is a fresh folder, {file} a plain file,
# {corrupt} a folder whose checkpoint.pt is not one.
BAD_INPUT = {
    "seed below 0": ("train", ["--seed", "-1"], ["--seed"]),
    "seed above 2**32-1": ("train", ["--seed", str(2**32)], ["--seed"]),
    "hidden too large": ("train", ["--num_hidden", "1000000"], ["--num_hidden", "GiB"]),
    "sequence too long": ("train", ["--input_length", "100000000"], ["--input_length", "GiB"]),
    "threads": ("train", ["--threads", "99999999999"], ["--threads"]),
    "forget bias nan": ("train", ["--forget_bias", "nan"], ["--forget_bias", "finite"]),
    "learning rate inf": ("train", ["--learning_rate", "inf"], ["--learning_rate", "finite"]),
    "learning rate 0": ("train", ["--learning_rate", "0"], ["--learning_rate"]),
    "max norm nan": ("train", ["--max_norm", "nan"], ["--max_norm"]),
    "data size negative": ("train", ["--data_size", "-5"], ["--data_size"]),
    "data size 1": ("train", ["--data_size", "1"], ["--data_size"]),
    "input length 0": ("train", ["--input_length", "0"], ["--input_length"]),
    "batch size": ("train", ["--batch_size", "-1"], ["--batch_size"]),
    "max epoch": ("train", ["--max_epoch", "0"], ["--max_epoch"]),
    "portion 1": ("train", ["--portion_train", "1.0"], ["--portion_train"]),
    "input dim": ("train", ["--input_dim", "3"], ["--input_dim"]),
    "not an int": ("train", ["--num_hidden", "many"], ["--num_hidden", "invalid int"]),
    "not a float": ("train", ["--learning_rate", "1e-3x"], ["--learning_rate", "invalid float"]),
    "unknown choice": ("train", ["--lstm_impl", "slow"], ["--lstm_impl"]),
    "unknown flag": ("train", ["--hidden", "3"], ["unrecognized"]),
    "unknown device": ("train", ["--device", "tpu"], ["--device"]),
    "resume and overwrite": ("train", ["--resume", "--overwrite", "--out", "{tmp}/run"], ["--resume", "--overwrite"]),
    "resume nothing": ("train", ["--resume", "--out", "{tmp}/none"], ["--resume", "not found"]),
    "resume a corrupt checkpoint": ("train", ["--resume", "--out", "{corrupt}"], ["--resume", "corrupt"]),
    "out is a file": ("train", ["--out", "{file}"], ["--out"]),
    "out under a file": ("train", ["--out", "{file}/run"], ["--out"]),
    "out not writable": ("train", ["--out", "/sys/part1_run"], ["--out"]),  # refused even to root
    "sweep seed": ("compare", ["--seeds", "0", "-1", "--out", "{tmp}/sweep"], ["--seed"]),
    "sweep lengths": ("compare", ["--lengths", "0", "--out", "{tmp}/sweep"], ["--lengths"]),
    "sweep repeated length": ("compare", ["--lengths", "9", "9", "--out", "{tmp}/sweep"], ["--lengths"]),
    "sweep max steps": ("compare", ["--max_steps", "0", "--out", "{tmp}/sweep"], ["--max_steps"]),
    "sweep threads": ("compare", ["--threads", "-2", "--out", "{tmp}/sweep"], ["--threads"]),
    "sweep learning rate": ("compare", ["--learning_rate", "nan", "--out", "{tmp}/sweep"], ["--learning_rate"]),
    "sweep hidden": ("compare", ["--num_hidden", "1000000", "--out", "{tmp}/sweep"], ["--num_hidden", "GiB"]),
    "sweep not an int": ("compare", ["--lengths", "nine"], ["--lengths", "invalid int"]),
    "sweep out is a file": ("compare", ["--lengths", "9", "--out", "{file}"], ["--out"]),
    "sweep resume and overwrite": ("compare", ["--resume", "--overwrite", "--out", "{tmp}/sweep"], ["--overwrite"]),
}
ENV = {"bad fast-path setting": {"CS324_LSTM_CELL": "bogus"}}  # the environment of a case, where it has one
BAD_INPUT["bad fast-path setting"] = ("train", ["--out", "{tmp}/run"], ["CS324_LSTM_CELL"])
if not torch.cuda.is_available():
    BAD_INPUT["cuda without a GPU"] = ("train", ["--device", "cuda"], ["--device cuda"])




@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, subprocess.CompletedProcess], Path]:
    """Every BAD_INPUT case, each in its own process; and the folder holding their {tmp} folders."""
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "a_file").write_text("not a folder")
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    cases = []
    for case, (script, args, _) in BAD_INPUT.items():
        args = [a.format(tmp=tmp / case.replace(" ", "_"), file=tmp / "a_file", corrupt=tmp / "corrupt") for a in args]
        cases.append([str(SCRIPTS[script]), args, ENV.get(case, {})])
    return dict(zip(BAD_INPUT, run_scripts(cases))), tmp


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line(case: str, bad_input_results: tuple) -> None:
    results, tmp = bad_input_results
    assert_one_line_error(results[case], *BAD_INPUT[case][2])
    assert not (tmp / case.replace(" ", "_")).exists()  # refused before anything was written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused_before_training(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        assert_one_line_error(run("train", [*TINY, "--out", str(tmp_path / "run")]), "--out", "cannot write")
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.slow  # three trainings in subprocesses: `make test-slow`
def test_a_second_run_into_the_same_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run("train", [*TINY, "--max_epoch", "1", "--out", str(out)]).returncode == 0
    before = (out / "metrics.json").read_bytes()
    assert_one_line_error(run("train", [*TINY, "--max_epoch", "1", "--out", str(out)]), "--resume", "--overwrite")
    assert (out / "metrics.json").read_bytes() == before
    again = run("train", [*TINY, "--max_epoch", "1", "--seed", "1", "--out", str(out), "--overwrite"])
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1


@pytest.mark.slow  # three sweeps in subprocesses: `make test-slow`
def test_a_second_sweep_is_refused_resumed_or_overwritten(tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "sweep")]
    assert run("compare", [*TINY_SWEEP, *out]).returncode == 0
    assert_one_line_error(run("compare", [*TINY_SWEEP, *out]), "--resume", "--overwrite")
    kept = run("compare", [*TINY_SWEEP, *out, "--resume"])
    assert kept.returncode == 0 and "train.py:" not in kept.stdout  # finished runs are reused, not retrained
    # Reusing 4-step runs under an 8-step budget would report a budget they did not have.
    assert_one_line_error(run("compare", [*TINY_SWEEP, *out, "--resume", "--max_steps", "8"]), "--max_steps")
    fresh = run("compare", [*TINY_SWEEP, *out, "--overwrite"])
    assert fresh.returncode == 0 and fresh.stdout.count("train.py:") == 1


def test_resume_removes_stray_temporary_files(tmp_path: Path) -> None:
    assert run("train", [*TINY, "--max_epoch", "1", "--out", str(tmp_path)]).returncode == 0
    stray = tmp_path / ".checkpoint.pt.x8k2_q.atomic.tmp"  # what a kill during the checkpoint write leaves
    stray.write_bytes(b"half a checkpoint")
    result = run("train", [*TINY, "--max_epoch", "2", "--out", str(tmp_path), "--resume"])
    assert result.returncode == 0, result.stderr
    assert not stray.exists() and stray.name in result.stderr


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path: Path) -> None:
    args = [*TINY, "--eval_every", "7", "--max_epoch", "1000"]
    proc = subprocess.Popen([sys.executable, str(SCRIPTS["train"]), *args, "--out", str(tmp_path / "cut")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training is under way
        if ": step " in line:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1 and "--resume" in lines[0], stderr
    step = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"]
    assert not list((tmp_path / "cut").glob("*.tmp"))

    budget = ["--max_steps", str(step + 13)]
    assert run("train", [*args, *budget, "--out", str(tmp_path / "cut"), "--resume"]).returncode == 0
    assert run("train", [*args, *budget, "--out", str(tmp_path / "straight")]).returncode == 0
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("cut", "straight"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    untimed = [[{k: v for k, v in h.items() if k != "time"} for h in c["history"]] for c in (a, b)]
    assert untimed[0] == untimed[1]


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    resource = pytest.importorskip("resource")
    args = [*TINY, "--out", str(tmp_path)]
    assert run("train", [*args, "--max_epoch", "1"]).returncode == 0
    size = (tmp_path / "checkpoint.pt").stat().st_size

    def small_files() -> None:  # in the child: files may not grow past half a checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    try:
        result = run("train", [*args, "--max_epoch", "3", "--resume"], preexec_fn=small_files)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot limit file sizes here ({exc})")
    assert_one_line_error(result, "checkpoint.pt")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 10
    assert not list(tmp_path.glob("*.tmp"))


def test_a_diverging_run_stops_with_one_line_and_exit_1(tmp_path: Path) -> None:
    """A failed training is not bad input: exit code 1 (as in part 2), one line, and no metrics of a NaN model."""
    result = run("train", [*TINY, "--learning_rate", "3e38", "--out", str(tmp_path / "nan")])  # inf by step 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "diverged" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "nan" / "metrics.json").exists()

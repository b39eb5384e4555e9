"""Part 1 training CLI: smoke run, learning, resume, and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "part1" / "train.py"
TINY = ["--data_size", "600", "--batch_size", "50", "--num_hidden", "16", "--no_progress"]


def run_cli(args, cwd=ROOT):
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("model", ["lstm", "rnn"])
def test_smoke_run_writes_metrics(tmp_path, model):
    out = tmp_path / model
    result = run_cli(["--model", model, "--input_length", "5", "--max_epoch", "1", "--out", str(out), *TINY],
                     cwd=ROOT / "part1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"] == model and metrics["steps"] == 10  # 480 train / 50 per batch
    assert 0 <= metrics["val_accuracy"] <= 1 and metrics["history"][-1]["step"] == 10
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(metrics["history"][0])
    assert (out / "curves.png").stat().st_size > 1000 and (out / "checkpoint.pt").is_file()


def test_lstm_learns_short_palindromes(tmp_path):
    sys.path.insert(0, str(ROOT / "part1"))
    from train import Config, train

    metrics = train(Config(input_length=6, data_size=10000, batch_size=64, max_epoch=3, num_hidden=32,
                           learning_rate=0.01, out=str(tmp_path), progress=False))
    assert metrics["val_accuracy"] >= 0.95  # chance is 0.1; this setting reaches ~1.0 in 375 steps


def test_resume_continues_exactly(tmp_path):
    common = ["--input_length", "6", *TINY]
    assert run_cli([*common, "--max_epoch", "2", "--out", str(tmp_path / "straight")]).returncode == 0
    assert run_cli([*common, "--max_epoch", "1", "--out", str(tmp_path / "resumed")]).returncode == 0
    result = run_cli([*common, "--max_epoch", "2", "--out", str(tmp_path / "resumed"), "--resume"])
    assert result.returncode == 0, result.stderr
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 20
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


@pytest.mark.parametrize("args, flag", [
    (["--input_length", "0"], "--input_length"),
    (["--num_hidden", "0"], "--num_hidden"),
    (["--batch_size", "-1"], "--batch_size"),
    (["--learning_rate", "0"], "--learning_rate"),
    (["--max_epoch", "0"], "--max_epoch"),
    (["--portion_train", "1.0"], "--portion_train"),
    (["--portion_train", "0"], "--portion_train"),
    (["--data_size", "1"], "--data_size"),
    (["--input_dim", "3"], "--input_dim"),
    (["--device", "tpu"], "--device"),
    (["--resume", "--out", "/nonexistent/run"], "--resume"),
])
def test_bad_input_is_one_line(args, flag):
    result = run_cli(args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and flag in lines[0], result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_refused():
    result = run_cli(["--device", "cuda"])
    assert result.returncode == 2 and "--device cuda" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_and_mismatched_checkpoint(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = run_cli(["--resume", "--out", str(tmp_path / "bad"), *TINY])
    assert result.returncode == 2 and "corrupt" in result.stderr and "Traceback" not in result.stderr

    assert run_cli(["--input_length", "5", "--max_epoch", "1", "--out", str(tmp_path / "ok"), *TINY]).returncode == 0
    result = run_cli(["--input_length", "7", "--resume", "--out", str(tmp_path / "ok"), *TINY])
    assert result.returncode == 2 and "--input_length" in result.stderr

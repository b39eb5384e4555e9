"""grad_norms.py: the input gradients it measures, the files it writes, and its one-line errors."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import grad_norms
import train
from dataset import encode
from lstm import LSTM

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "part1" / "grad_norms.py"
TINY = ["--input_length", "5", "--steps", "4", "--num_hidden", "8", "--probe_size", "50", "--threads", "1",
        "--device", "cpu"]


def tiny_args(out: Path) -> argparse.Namespace:
    return grad_norms.parse_args([*TINY, "--out", str(out)])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder a tiny run of the script wrote into."""
    out = tmp_path_factory.mktemp("grad_norms") / "results"
    grad_norms.main([*TINY, "--out", str(out)])
    return out


def test_tiny_run_writes_finite_norms_of_every_step(tiny_run: Path) -> None:
    assert sorted(p.name for p in tiny_run.iterdir()) == [grad_norms.JSON, grad_norms.PNG]  # no checkpoints
    result = json.loads((tiny_run / grad_norms.JSON).read_text())
    assert result["input_length"] == 5 and "--steps 4" in result["command"]
    for model in grad_norms.MODELS:
        for state in grad_norms.STATES:
            norms = result["models"][model][state]["norms"]
            assert len(norms) == 5 and all(math.isfinite(n) and n > 0 for n in norms)
        trained = result["models"][model]["trained"]
        assert trained["steps"] == 4 and 0 <= trained["val_accuracy"] <= 1
        assert result["config"][model]["chrono"] and result["config"][model]["input_dim"] == 10
    assert (tiny_run / grad_norms.PNG).read_bytes()[:4] == b"\x89PNG"


def test_untrained_model_is_the_one_train_starts_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_step, seen = train.train_step, {}

    def keep_the_weights(model, *args):  # the weights as train() hands them to its first update
        seen.setdefault(model.__class__.__name__, {k: v.clone() for k, v in model.state_dict().items()})
        return first_step(model, *args)

    monkeypatch.setattr(train, "train_step", keep_the_weights)
    for model in grad_norms.MODELS:
        config = grad_norms.run_config(model, tiny_args(tmp_path), tmp_path)
        ours = grad_norms.initial_model(config, torch.device("cpu")).state_dict()
        train.train(dataclasses.replace(config, max_steps=1))
        theirs = seen[type(grad_norms.initial_model(config, torch.device("cpu"))).__name__]
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_lstm_fast_path_input_gradient_matches_the_reference() -> None:
    torch.manual_seed(0)
    fast = LSTM(7, 10, 16, 10, chrono=True)  # hand_bptt=True: lstm_bptt.py returns grad_x
    reference = LSTM(7, 10, 16, 10, chrono=True, hand_bptt=False)
    reference.load_state_dict(fast.state_dict())
    digits = torch.randint(0, 10, (64, 8))
    x, y = encode(digits[:, :-1], one_hot=True), digits[:, -1]
    grad_fast, acc_fast, _ = grad_norms.input_grads(fast, x, y)
    grad_ref, acc_ref, _ = grad_norms.input_grads(reference, x, y)
    assert grad_fast.shape == (64, 7, 10) and grad_ref.abs().max() > 0
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-4, atol=1e-6)
    assert acc_fast == acc_ref


def test_norms_are_per_sample_gradients_whatever_the_batch() -> None:
    torch.manual_seed(0)
    model = LSTM(4, 10, 8, 10, hand_bptt=False)
    digits = torch.randint(0, 10, (6, 5))
    x, y = encode(digits[:, :-1], one_hot=True), digits[:, -1]
    batch = grad_norms.input_grads(model, x, y)[0]
    alone = torch.cat([grad_norms.input_grads(model, x[i:i + 1], y[i:i + 1])[0] for i in range(6)])
    torch.testing.assert_close(batch, alone)


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], ["--steps"]),
    (["--input_length", "0"], ["--input_length"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_results_are_kept_without_overwrite(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = (tiny_run / grad_norms.JSON).read_bytes()
    with pytest.raises(SystemExit) as exc:
        grad_norms.main([*TINY, "--out", str(tiny_run)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and "--overwrite" in lines[0]
    assert (tiny_run / grad_norms.JSON).read_bytes() == before

"""Part 1 training: smoke run, learning, stored reference numbers, exact resume, resume settings."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cs324_utils import UserError
from palindrome_run import RESUME_MAY_CHANGE, RESUME_MUST_MATCH, RUN_CONTROL
from train import Config, train

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "part1" / "train.py"
TINY = ["--data_size", "600", "--batch_size", "50", "--num_hidden", "16", "--no_progress"]
TINY_CONFIG = dict(input_length=6, data_size=600, batch_size=50, num_hidden=16, progress=False)  # 10 steps an epoch


def run_cli(args, cwd=ROOT):
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize("model", ["lstm", "rnn"])
def test_smoke_run_writes_metrics(tmp_path, model):
    out = tmp_path / model
    result = run_cli(["--model", model, "--input_length", "5", "--max_epoch", "1", "--threads", "1",
                      "--out", str(out), *TINY], cwd=ROOT / "part1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"train.py: {model.upper()}, input length 5")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"] == model and metrics["steps"] == 10  # 480 train / 50 per batch
    assert metrics["config"]["threads"] == 1 == metrics["threads"] and metrics["config"]["lstm_impl"] == "fast"
    assert 0 <= metrics["val_accuracy"] <= 1 and metrics["history"][-1]["step"] == 10
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(metrics["history"][0])
    assert (out / "curves.png").stat().st_size > 1000 and (out / "checkpoint.pt").is_file()
    assert ("lstm_layers" in metrics) == (model == "lstm")  # which fast-path layers ran (CPU only)


def test_lstm_learns_short_palindromes(tmp_path):
    metrics = train(Config(input_length=6, data_size=10000, batch_size=64, max_epoch=3, num_hidden=32,
                           learning_rate=0.01, out=str(tmp_path), progress=False))
    assert metrics["val_accuracy"] >= 0.95  # chance is 0.1; this setting reaches ~1.0 in 375 steps


# The final training loss, validation loss and sum of |w| of each parameter after 20 steps, as stored
# from a run of this code: any change of data, initialisation, batch order or update moves them.
REFERENCE = {
    "lstm": (2.272718752423922, 2.1583325703938803,
             {"W_x": 10.972299, "W_h": 194.730591, "b": 25.049828, "W_ph": 25.026131, "b_p": 1.018981}),
    "rnn": (2.3519961684942245, 2.3799593607584635,
            {"W_hx": 0.936316, "W_hh": 54.740803, "b_h": 4.052, "W_ph": 19.2286, "b_p": 1.317705}),
}


@pytest.mark.parametrize("model", ["lstm", "rnn"])
def test_seeded_run_matches_stored_numbers(tmp_path, model):
    """A change of data, initialisation, batch order or update shows here; another CPU's rounding does not."""
    metrics = train(Config(model=model, input_length=5, data_size=600, batch_size=50, num_hidden=16, max_epoch=2,
                           learning_rate=0.01, seed=3, out=str(tmp_path), progress=False))
    train_loss, val_loss, sums = REFERENCE[model]
    last = metrics["history"][-1]
    assert last["train_loss"] == pytest.approx(train_loss, rel=1e-4)
    assert last["val_loss"] == pytest.approx(val_loss, rel=1e-4)
    got = {name: w.abs().sum().item() for name, w in weights(tmp_path).items()}
    assert got == pytest.approx(sums, rel=1e-4)


def test_resume_continues_exactly(tmp_path):
    train(Config(max_epoch=2, out=str(tmp_path / "straight"), **TINY_CONFIG))
    train(Config(max_epoch=1, out=str(tmp_path / "resumed"), **TINY_CONFIG))
    resumed = train(Config(max_epoch=2, out=str(tmp_path / "resumed"), resume=True, **TINY_CONFIG))
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert resumed["steps"] == 20 and all(torch.equal(a[name], b[name]) for name in a)


def test_resume_from_the_middle_of_an_epoch_is_exact(tmp_path):
    """A run stopped mid-epoch (step 13 of 10-step epochs) resumes on the same batch order."""
    straight = train(Config(max_steps=25, eval_every=5, out=str(tmp_path / "a"), **TINY_CONFIG))
    train(Config(max_steps=13, eval_every=5, out=str(tmp_path / "b"), **TINY_CONFIG))
    resumed = train(Config(max_steps=25, eval_every=5, out=str(tmp_path / "b"), resume=True, **TINY_CONFIG))
    assert straight["steps"] == resumed["steps"] == 25
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[name], b[name]) for name in a)
    # The budget was raised on resume: honoured, and recorded with the step it applied from.
    assert resumed["config"]["max_steps"] == 25 and resumed["resumes"] == [{"step": 13, "changed": {"max_steps": [13, 25]}}]


def test_every_config_field_has_a_resume_rule():
    groups = (RESUME_MUST_MATCH, RESUME_MAY_CHANGE, RUN_CONTROL)
    names = [name for group in groups for name in group]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(Config))  # each exactly once


@pytest.mark.parametrize("change", [dict(learning_rate=0.5), dict(max_norm=1.0), dict(forget_bias=0.0),
                                    dict(chrono=True), dict(batch_size=40), dict(seed=1)])
def test_resume_refuses_settings_that_would_change_the_run(tmp_path, change):
    """--resume --learning_rate 0.5 once kept training at the checkpoint's rate while recording 0.5."""
    train(Config(max_epoch=1, out=str(tmp_path), **TINY_CONFIG))
    flag = f"--{next(iter(change))}"
    with pytest.raises(UserError, match=flag):
        train(Config(max_epoch=2, out=str(tmp_path), resume=True, **{**TINY_CONFIG, **change}))


def test_resume_refuses_a_budget_below_the_steps_taken(tmp_path):
    train(Config(max_epoch=2, out=str(tmp_path), **TINY_CONFIG))
    with pytest.raises(UserError, match="already at step 20"):
        train(Config(max_epoch=1, out=str(tmp_path), resume=True, **TINY_CONFIG))


def test_reference_lstm_impl_trains_and_is_recorded(tmp_path):
    metrics = train(Config(max_epoch=1, lstm_impl="reference", out=str(tmp_path), **TINY_CONFIG))
    assert metrics["config"]["lstm_impl"] == "reference" and "lstm_layers" not in metrics
    with pytest.raises(UserError, match="--lstm_impl"):
        train(Config(lstm_impl="slow", out=str(tmp_path / "x"), **TINY_CONFIG))


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    train(Config(max_epoch=1, out=str(tmp_path), **TINY_CONFIG))
    with pytest.raises(UserError, match="--input_length"):
        train(Config(max_epoch=2, out=str(tmp_path), resume=True, **{**TINY_CONFIG, "input_length": 7}))
    with pytest.raises(UserError, match="--model"):
        train(Config(max_epoch=2, out=str(tmp_path), resume=True, model="rnn", **TINY_CONFIG))


def test_capped_data_keeps_the_step_budget_of_the_requested_size(capsys: pytest.CaptureFixture) -> None:
    """Length 5 has 1,000 palindromes: 20 epochs of 7 steps cannot learn, so the default run keeps
    the 12,500 steps of 20 epochs over 100,000; an explicit --max_steps budget is left as it is."""
    asked = Config(input_length=4)
    config = asked.validated()
    assert config.data_size == 1000 and config.max_epoch == 1786  # ceil(20 * 625 / 7)
    assert asked.data_size == 100_000 and asked.max_epoch == 20 and asked.out == ""  # a resolved copy
    assert "1786 epochs" in capsys.readouterr().err
    budget = Config(input_length=4, max_steps=500, max_epoch=20).validated(warn=False)
    assert budget.data_size == 1000 and budget.max_epoch == 20
    assert config.validated().max_epoch == 1786  # validating again changes nothing

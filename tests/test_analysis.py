"""The analysis scripts behind report.md: the RNN's failures, the learning-rate study, the GAN recipe study."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import compare
import lr_study
import recipe_study
import rnn_failures
from conftest import write_fake_mnist
from file_checks import Fields
from train import train


def test_rnn_failures_trains_exactly_as_train_py(tmp_path: Path) -> None:
    """The instrumented run is the sweep's run, step for step: the same validation accuracies as train.py."""
    args = rnn_failures.parse_args(["--out", str(tmp_path / "rf"), "--threads", "1"])
    config = rnn_failures.case_config(7, 3, 30, {"data_size": 3000}, args)
    config = dataclasses.replace(config, eval_every=10)
    steps, validations = rnn_failures.run_case(config)
    assert len(steps) == 30 and all(r["grad_norm"] > 0 and r["rms_min"] > 0 and r["step_max"] > 0 for r in steps)
    # RMSprop's step per weight is bounded by lr / sqrt(1 - alpha) = 10 lr whatever the gradient.
    assert max(r["step_max"] for r in steps) <= 10 * config.learning_rate * (1 + 1e-5)
    metrics = train(dataclasses.replace(config, out=str(tmp_path / "train")))
    assert [v["val_accuracy"] for v in validations] == [h["val_accuracy"] for h in metrics["history"]]
    assert all(sum(map(sum, v["confusion"])) == 600 for v in validations)  # 20% of 3000 palindromes


def test_rnn_failures_writes_its_files_and_refuses_to_replace_them(tmp_path: Path) -> None:
    out = tmp_path / "rf"
    argv = ["--cases", "len29_seed2", "len29_seed2_lr3e-4", "len29_seed2_clip1", "len19_seed2", "--steps", "20",
            "--out", str(out)]
    result = rnn_failures.run(rnn_failures.parse_args(argv), "test")
    assert set(result["cases"]) == {"len29_seed2", "len29_seed2_lr3e-4", "len29_seed2_clip1", "len19_seed2"}
    for name in ("rnn_failures.json", "rnn_collapses.png", "rnn_plateaus.png", "steps.len29_seed2.csv"):
        assert (out / name).stat().st_size > 100, name
    with pytest.raises(Exception, match="--overwrite"):
        rnn_failures.run(rnn_failures.parse_args(argv), "test")
    (out / "rnn_plateaus.png").unlink()
    rnn_failures.redraw(rnn_failures.parse_args(["--redraw", "--out", str(out), "--overwrite"]))
    assert (out / "rnn_plateaus.png").stat().st_size > 100
    summary = json.loads((out / "rnn_failures.json").read_text())
    summary["cases"]["len19_seed2"]["validations"][0]["confusion"][3] = [1, 2]
    (out / "rnn_failures.json").write_text(json.dumps(summary))
    with pytest.raises(Exception, match="confusion.*10 rows of 10 counts"):
        rnn_failures.redraw(rnn_failures.parse_args(["--redraw", "--out", str(out), "--overwrite"]))


def test_lr_study_tables_every_cell(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """One rate swept here, one taken from a sweep without the stop at 99.5% (as the template comparison is)."""
    sweep = ["--lengths", "3", "--lstm_lengths", "--seeds", "0", "1", "--input_dim", "1", "--lstm_init",
             "forget_bias", "--max_steps", "20", "--threads", "1"]
    compare.sweep(compare.parse_args([*sweep, "--target_accuracy", "0", "--out", str(tmp_path / "tpl")]), "test")
    out = tmp_path / "lr"
    study = ["--learning_rates", "0.01", "--reuse", f"0.001={tmp_path / 'tpl'}", "--lengths", "3", "--seeds", "0",
             "--max_steps", "20"]
    lr_study.study(lr_study.parse_args([*study, "--close", "rnn:3", "--close_seeds", "1", "--out", str(out)]), "test")
    summary = json.loads((out / "lr_study.json").read_text())
    assert set(summary["rates"]) == {"0.001", "0.01"} and set(summary["rates"]["0.01"]) == {"lstm 3", "rnn 3"}
    for rate in ("0.001", "0.01"):  # the close cell has its extra seed at the swept rate and the reused one
        assert [summary["rates"][rate][cell]["runs"] for cell in ("lstm 3", "rnn 3")] == [1, 2]
    table = (out / "lr_study.md").read_text()
    assert table.count("| 3 |") == 2 and "/2" in table and (out / "lr_study.png").stat().st_size > 1000
    assert (out / "lr0.01" / "close_rnn3" / "compare.json").is_file() and not (out / "lr0.001").exists()
    for close, message in ((["gru:3"], "MODEL:LENGTH"), (["rnn:5"], "MODEL:LENGTH"), (["rnn:3", "rnn:3"], "once"),
                           (["rnn:3", "--close_seeds", "0"], "not among --seeds"),
                           (["rnn:3", "--close_seeds", "2"], "lacks some")):  # the reused sweep has no seed 2
        with pytest.raises(Exception, match=message):
            lr_study.study(lr_study.parse_args([*study, "--close", *close, "--out", str(tmp_path / "lr3")]), "test")
    for reuse, steps, message in (("0.003", "20", "learning_rate"),  # a sweep at another rate
                                  ("0.001", "40", "fewer than 40"),  # a sweep shorter than the study
                                  ("0.001", "10", "no validation within 10")):  # nothing inside the budget
        with pytest.raises(Exception, match=message):
            lr_study.study(lr_study.parse_args(["--learning_rates", "0.01", "--reuse", f"{reuse}={tmp_path / 'tpl'}",
                                                "--lengths", "3", "--seeds", "0", "--max_steps", steps,
                                                "--out", str(tmp_path / "lr2")]), "test")


def test_lr_study_reads_a_longer_run_up_to_its_own_budget() -> None:
    row = {"model": "rnn", "input_length": 9, "curve": [[250, 0.5], [500, 0.995], [750, 0.2]],
           "peak_accuracy": 0.995, "steps_to_99": 500}
    assert lr_study.within_budget(Fields(row, "compare.json"), 250) | {"curve": None} == {
        **row, "curve": None, "peak_accuracy": 0.5, "steps_to_99": None}
    assert lr_study.within_budget(Fields(row, "compare.json"), 500)["steps_to_99"] == 500
    with pytest.raises(Exception, match="curve is damaged"):  # a hand-edited summary
        lr_study.within_budget(Fields({**row, "curve": [[250, "0.5"]]}, "compare.json"), 500)


def test_recipe_study_redraws_its_figure_from_the_summary(tmp_path: Path) -> None:
    end = {"fid": 30.0, "inception_score": 7.4}
    runs = {"all four": {"0": {"end": end}, "1": {"end": {**end, "fid": 33.0}}}, "none": {"0": {"end": end}}}
    (tmp_path / "recipe_study.json").write_text(json.dumps({"runs": runs}))
    recipe_study.redraw(recipe_study.parse_args(["--redraw", "--out", str(tmp_path)]))
    assert (tmp_path / "recipe_study.png").stat().st_size > 1000
    with pytest.raises(Exception, match="--overwrite"):  # a figure is not replaced unasked
        recipe_study.redraw(recipe_study.parse_args(["--redraw", "--out", str(tmp_path)]))
    runs["none"]["0"]["end"]["fid"] = "30"  # hand-edited
    (tmp_path / "recipe_study.json").write_text(json.dumps({"runs": runs}))
    with pytest.raises(Exception, match="fid"):
        recipe_study.redraw(recipe_study.parse_args(["--redraw", "--out", str(tmp_path), "--overwrite"]))


@pytest.mark.slow  # two GAN trainings and their scoring: `make test-slow`
def test_recipe_study_scores_each_run_and_keeps_its_losses(tmp_path: Path) -> None:
    data = write_fake_mnist(tmp_path / "data", n_train=64, n_test=32)
    args = recipe_study.parse_args(["--data_dir", str(data), "--no_download", "--n_epochs", "1", "--settings",
                                    "all four", "none", "--seeds", "0", "--n_samples", "20", "--runs",
                                    str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    recipe_study.study(args, "test")
    summary = json.loads((tmp_path / "out" / "recipe_study.json").read_text())
    assert set(summary["summary"]) == {"all four", "none"}
    assert summary["summary"]["none"]["end"]["fid"][1] == 0.0  # one seed: no spread
    for name in ("losses.csv", "config.json", "scores.json"):
        assert (tmp_path / "out" / "none_seed0" / name).is_file()
    config = json.loads((tmp_path / "out" / "none_seed0" / "config.json").read_text())
    assert (config["d_dropout"], config["label_smoothing"], config["ema"], config["lr_decay"]) == (0, 0, 0, "none")

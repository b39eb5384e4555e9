"""Both training scripts as a hostile user and a cluster scheduler meet them: damaged files read back,
stop signals at any moment, two runs on one folder, the committed results, absurd budgets and odd paths.

Each group is a table; every case ends in one line and the exit code promised (or a run that works).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lstm_kernel
from conftest import ROOT, one_line_error, run_scripts, write_fake_mnist

TRAIN, GAN, COMPARE = (str(ROOT / p) for p in ("part1/train.py", "part2/my_gan.py", "part1/compare.py"))
P1 = ["--model", "rnn", "--input_length", "6", "--data_size", "600", "--batch_size", "50", "--num_hidden", "16",
      "--no_progress", "--threads", "1"]
P1_SWEEP = ["--models", "rnn", "--lengths", "3", "--seeds", "0", "--max_steps", "4", "--eval_every", "2",
            "--data_size", "100", "--num_hidden", "8", "--threads", "1"]
ENV1 = {"OMP_NUM_THREADS": "1"}


def gan_flags(data: Path, precision: str = "fp32") -> list[str]:
    return ["--data_dir", str(data), "--no_download", "--batch_size", "16", "--latent_dim", "8", "--save_interval",
            "3", "--device", "cpu", "--precision", precision, "--threads", "1"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished part 1 run, GAN run and sweep to damage copies of, and the tiny MNIST the GAN read."""
    tmp = tmp_path_factory.mktemp("made")
    data = write_fake_mnist(tmp / "data", n_train=64, n_test=16)
    results = run_scripts([(TRAIN, [*P1, "--max_epoch", "1", "--out", str(tmp / "p1")], ENV1),
                           (GAN, [*gan_flags(data), "--n_epochs", "1", "--out", str(tmp / "gan")], ENV1),
                           (COMPARE, [*P1_SWEEP, "--out", str(tmp / "sweep")], ENV1)])
    assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
    return {"p1": tmp / "p1", "gan": tmp / "gan", "sweep": tmp / "sweep", "data": data, "tmp": tmp}


# ----------------------------------------------------------------------------- files read back


def _set(path: str, value):
    """A change to a checkpoint dict: `path` is a key, or "key/sub" for a nested one; value None deletes."""
    def change(ckpt: dict) -> None:
        *parents, last = (int(k) if k.isdigit() else k for k in path.split("/"))
        target = ckpt
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value
    return change


# case: (which run, a change to its checkpoint, a word the one line must hold)
CHECKPOINTS = {
    "p1 config a list": ("p1", _set("config", [1, 2]), "config"),
    "p1 step a string": ("p1", _set("step", "ten"), "step"),
    "p1 elapsed a string": ("p1", _set("elapsed", "long"), "elapsed"),
    "p1 window a list": ("p1", _set("window", [0.0]), "window"),
    "p1 history an int": ("p1", _set("history", 3), "history"),
    "p1 weight of another shape": ("p1", _set("model/W_hh", torch.zeros(3, 3)), "W_hh"),
    "p1 weight not finite": ("p1", _set("model/W_hh", lambda w: w * float("nan")), "W_hh"),
    "p1 optimizer a string": ("p1", _set("optimizer", "rmsprop"), "optimizer"),
    "p1 batch order a float tensor": ("p1", _set("shuffle_state", torch.zeros(3)), "shuffle_state"),
    "p1 batch in epoch negative": ("p1", _set("batch_in_epoch", -1), "batch_in_epoch"),
    "gan config without precision": ("gan", _set("config/precision", None), "precision"),
    "gan noise of another shape": ("gan", _set("fixed_noise", torch.zeros(3, 8)), "fixed_noise"),
    "gan noise a string": ("gan", _set("fixed_noise", "noise"), "fixed_noise"),
    "gan batch in epoch a string": ("gan", _set("batch_in_epoch", "abc"), "batch_in_epoch"),
    "gan negative epoch": ("gan", _set("epoch", -1), "epoch"),
    "gan weights not finite": ("gan", _set("generator/net.0.weight", lambda w: w * float("nan")), "net.0.weight"),
    "gan window of another shape": ("gan", _set("window", torch.zeros(2, 3)), "window"),
    "gan random state a string": ("gan", _set("rng/shuffle", "seed"), "shuffle"),
    "gan optimizer moments not finite": ("gan", _set("opt_d/state/0/exp_avg", lambda t: t * float("inf")), "opt_d"),
}


def damaged_copy(made: dict[str, Path], which: str, name: str, tmp: Path) -> Path:
    folder = tmp / name.replace(" ", "_")
    shutil.copytree(made[which], folder)
    return folder


@pytest.mark.slow  # over a minute of subprocesses: `make test-slow` (CI runs both)
def test_damaged_checkpoints_are_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    cases, words = [], []
    for name, (which, change, word) in CHECKPOINTS.items():
        folder = damaged_copy(made, which, name, tmp_path)
        ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
        change(ckpt)
        torch.save(ckpt, folder / "checkpoint.pt")
        script, flags = (TRAIN, [*P1, "--max_epoch", "2"]) if which == "p1" else \
            (GAN, [*gan_flags(made["data"]), "--n_epochs", "2"])
        cases.append((script, [*flags, "--resume", "--out", str(folder)], ENV1))
        words.append((name, word, folder))
    for (name, word, folder), result in zip(words, run_scripts(cases)):
        line = one_line_error(result)
        assert word in line and "checkpoint.pt" in line, (name, line)
        assert not list(folder.rglob("*.tmp")), name


def test_damaged_logs_and_summaries_are_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    """losses.csv on --resume and in figures.py; metrics.json of a sweep's kept run; config.json in figures.py."""
    binary = damaged_copy(made, "gan", "binary csv", tmp_path)
    (binary / "losses.csv").write_bytes(bytes(range(256)) * 4)
    sweeps = {}
    for name, change in (("metrics a list", lambda m: [1]), ("metrics without val_accuracy", lambda m: m.pop(
            "val_accuracy") and m), ("history a string", lambda m: {**m, "history": "many"})):
        folder = damaged_copy(made, "sweep", name, tmp_path)
        metrics_path = folder / "rnn_len3_seed0" / "metrics.json"
        metrics_path.write_text(json.dumps(change(json.loads(metrics_path.read_text()))))
        sweeps[name] = folder
    no_config = damaged_copy(made, "gan", "binary csv without config", tmp_path)  # figures.py falls back on the CSV
    (no_config / "config.json").unlink()
    (no_config / "losses.csv").write_bytes(bytes(range(256)) * 4)
    config_list = damaged_copy(made, "gan", "config a list", tmp_path)
    (config_list / "config.json").write_text("[1, 2]")
    figures = str(ROOT / "part2" / "figures.py")
    cases = [(GAN, [*gan_flags(made["data"]), "--n_epochs", "2", "--resume", "--out", str(binary)], ENV1),
             (figures, [str(no_config), "--out", str(tmp_path / "f.png")], ENV1),
             (figures, [str(config_list), "--out", str(tmp_path / "g.png")], ENV1),
             *((COMPARE, [*P1_SWEEP, "--resume", "--out", str(f)], ENV1) for f in sweeps.values())]
    words = ["losses.csv", "losses.csv", "config.json", "metrics.json", "val_accuracy", "history"]
    for word, result in zip(words, run_scripts(cases)):
        assert word in one_line_error(result)


# ----------------------------------------------------------------------------- stop signals


def start(script: str, args: list[str], out: Path) -> subprocess.Popen:
    """A training script in a process of its own, returned once it holds its folder (its start-up under way)."""
    proc = subprocess.Popen([sys.executable, script, *args, "--out", str(out)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV1})
    deadline = time.monotonic() + 120
    while not (out / ".run.lock").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143), "SIGHUP": (signal.SIGHUP, 129)}


# SIGINT (Ctrl-C) in training is tested by each part's own CLI tests; all three take the same path.
@pytest.mark.parametrize("part,name", [("p1", "SIGTERM"), ("gan", "SIGHUP")])
def test_a_stop_signal_in_training_saves_and_says_so_in_one_line(made: dict[str, Path], tmp_path: Path,
                                                                  part: str, name: str) -> None:
    signum, code = SIGNALS[name]
    out = tmp_path / "run"
    if part == "p1":
        proc = start(TRAIN, [*P1, "--max_epoch", "100000"], out)
    else:
        proc = start(GAN, [*gan_flags(made["data"]), "--n_epochs", "100000"], out)
    wait_for(out / "checkpoint.pt", proc)  # training is under way: an epoch has ended
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert proc.returncode == code and "Traceback" not in err, err
    assert name in lines[-1] and "--resume" in lines[-1], err
    assert not list(out.rglob("*.tmp")) and not (out / ".run.lock").exists()


@pytest.mark.parametrize("part,name", [("p1", "SIGINT"), ("gan", "SIGTERM")])
def test_a_stop_signal_during_start_up_is_one_line(made: dict[str, Path], tmp_path: Path, part: str,
                                                    name: str) -> None:
    """Sent as soon as the run holds its folder: while it loads data, times its layers or its precision."""
    signum, code = SIGNALS[name]
    out = tmp_path / "run"
    args = [*P1, "--max_epoch", "100000"] if part == "p1" else [*gan_flags(made["data"], "auto"), "--n_epochs",
                                                                 "100000"]
    proc = start(TRAIN if part == "p1" else GAN, args, out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert proc.returncode == code and "Traceback" not in err and name in lines[-1], err


# ----------------------------------------------------------------------------- two runs, one folder


@pytest.mark.slow  # two trainings at once, held for seconds: `make test-slow`
@pytest.mark.parametrize("part", ["p1", "gan"])
def test_a_second_run_on_a_folder_in_use_is_refused(made: dict[str, Path], tmp_path: Path, part: str) -> None:
    out = tmp_path / "run"
    args = [*P1, "--max_epoch", "100000"] if part == "p1" else [*gan_flags(made["data"]), "--n_epochs", "100000"]
    script = TRAIN if part == "p1" else GAN
    first = start(script, args, out)
    try:
        seconds = run_scripts([(script, [*args, *extra, "--out", str(out)], ENV1)
                               for extra in ([], ["--resume"], ["--overwrite"])])
        for second in seconds:
            line = one_line_error(second)
            assert "in use by" in line and f"pid {first.pid}" in line, line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143  # the refused runs wrote nothing the first one could trip on


# ----------------------------------------------------------------------------- the committed results


def test_nothing_is_written_into_the_committed_results_without_overwrite(made: dict[str, Path]) -> None:
    before = subprocess.run(["git", "status", "--porcelain", "--ignored", "part1/results", "part2/results"],
                            cwd=ROOT, capture_output=True, text=True).stdout
    ablation = ["--models", "lstm", "--lengths", "49", "--seeds", "0", "--lstm_lengths", "--lstm_init",
                "forget_bias", "--forget_bias", "1"]
    cases = [
        (TRAIN, [*P1, "--out", "part1/results/a_new_run"], ENV1),
        (TRAIN, [*P1, "--resume", "--out", "part1/results/train_len20"], ENV1),
        (GAN, [*gan_flags(made["data"]), "--out", "part2/results/recipe"], ENV1),
        (COMPARE, [*ablation, "--resume", "--out", "part1/results/ablation_init"], ENV1),
        (str(ROOT / "part1" / "grad_norms.py"), ["--out", "part1/results/grad_norms", "--steps", "2"], ENV1),
    ]
    for result in run_scripts(cases):
        assert "committed results" in one_line_error(result) and "--overwrite" in one_line_error(result)
    after = subprocess.run(["git", "status", "--porcelain", "--ignored", "part1/results", "part2/results"],
                           cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before


# ----------------------------------------------------------------------------- limits and environment


def test_absurd_budgets_and_impossible_paths_are_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    long_name = tmp_path / ("x" * 300)
    cases = [
        ((TRAIN, [*P1, "--max_epoch", str(10**12), "--out", str(tmp_path / "a")], ENV1), ["years", "--max_epoch"]),
        ((GAN, [*gan_flags(made["data"]), "--n_epochs", str(10**12), "--out", str(tmp_path / "b")], ENV1),
         ["years", "--n_epochs"]),
        ((TRAIN, [*P1, "--out", str(long_name)], ENV1), ["--out", "limit"]),
        ((GAN, [*gan_flags(made["data"]), "--out", str(long_name)], ENV1), ["--out", "limit"]),
        ((TRAIN, [*P1, "--out", str(tmp_path / "ü" / "file"), "--resume"],
          {**ENV1, "LC_ALL": "C", "PYTHONIOENCODING": "ascii"}), ["--resume"]),
    ]
    for (case, words), result in zip(cases, run_scripts([c for c, _ in cases])):
        line = one_line_error(result)
        assert all(w in line for w in words), line
    assert not [p for p in tmp_path.iterdir()]  # refused before anything was written


def test_a_non_ascii_out_on_an_ascii_terminal_trains(tmp_path: Path) -> None:
    out = tmp_path / "ergebnisse_ü"
    result = subprocess.run([sys.executable, TRAIN, *P1, "--max_steps", "3", "--out", str(out)], cwd=ROOT,
                            capture_output=True, timeout=120, env={**os.environ, **ENV1, "LC_ALL": "C",
                                                                   "PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert (out / "metrics.json").is_file()


def test_a_compiler_that_hangs_is_given_up_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hang = tmp_path / "cc"
    hang.write_text("#!/bin/sh\nsleep 600 &\nwait\n")  # its child keeps the pipe open too
    hang.chmod(0o755)
    monkeypatch.setenv("CC", str(hang))
    monkeypatch.setattr(lstm_kernel, "BUILD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(lstm_kernel, "KERNELS", lstm_kernel.Kernels())
    t0 = time.monotonic()
    assert lstm_kernel.load() is None and time.monotonic() - t0 < 30
    assert "did not finish" in lstm_kernel.describe()["fallbacks"]["cell"]

"""my_gan.py as a user meets it: bad input, an earlier run in --out, stray temp files, divergence, a full disk."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import my_gan
from conftest import ROOT, write_fake_mnist
from cs324_utils import all_finite
from file_checks import tensors_in
from gan_run import read_losses as read_csv_rows
from my_gan import Config, train

SCRIPT = ROOT / "part2" / "my_gan.py"
# 64 fake images in batches of 16: 4 iterations per epoch.
TINY = dict(batch_size=16, save_interval=3, seed=3, device="cpu", download=False, precision="bf16")
TINY_FLAGS = ["--batch_size", "16", "--save_interval", "3", "--seed", "3", "--device", "cpu", "--no_download",
              "--precision", "bf16"]


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """my_gan.py in a subprocess, from the repository root, as a user types it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env, **kwargs)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One epoch of TINY in a folder, and the bytes of every file it wrote."""
    out = tmp_path_factory.mktemp("earlier")
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), **TINY))
    return SimpleNamespace(out=out, files=folder_bytes(out))


# ----------------------------------------------------------------------------- bad input


def _read_only(tmp: Path) -> Path:
    folder = tmp / "read_only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o500)
    return folder


# name: (flags after --data_dir/--device/--no_download, built from a context; words the line must hold)
BAD_INPUT = {
    "seed below 0": (lambda c: ["--seed", "-1"], "--seed"),
    "seed above 2**32-1": (lambda c: ["--seed", str(2**32)], "--seed"),
    "out is a file": (lambda c: ["--out", str(c.a_file)], "--out"),
    "out under a file": (lambda c: ["--out", str(c.a_file / "run")], "--out"),
    "out read-only": (lambda c: ["--out", str(_read_only(c.tmp) / "run")], "--out"),
    "latent_dim beyond memory": (lambda c: ["--latent_dim", "1000000000", "--out", str(c.tmp / "z")], "--latent_dim"),
    "latent_dim as a float": (lambda c: ["--latent_dim", "1e9"], "--latent_dim"),
    "batch_size beyond memory": (lambda c: ["--batch_size", "1000000000000", "--out", str(c.tmp / "b")],
                                 "--batch_size"),
    "threads beyond reason": (lambda c: ["--threads", "99999999999"], "--threads"),
    "unknown flag": (lambda c: ["--epochs", "3"], "unrecognized"),
    "missing data": (lambda c: ["--data_dir", str(c.tmp), "--out", str(c.tmp / "no_data")], "MNIST"),
    "resume and overwrite": (lambda c: ["--resume", "--overwrite", "--out", str(c.run)], "--overwrite"),
    "an earlier run in --out": (lambda c: ["--out", str(c.run), *TINY_FLAGS], ("--resume", "--overwrite")),
    "resume with another seed": (lambda c: ["--resume", "--out", str(c.run), *TINY_FLAGS, "--n_epochs", "2",
                                            "--seed", "4"], "--seed"),
    "resume with other data": (lambda c: ["--resume", "--out", str(c.run), *TINY_FLAGS, "--n_epochs", "2",
                                          "--data_dir", str(c.other_data)], "--data_dir"),
}


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=pytest.mark.skipif(name == "out read-only" and os.geteuid() == 0,
                                                reason="root writes into read-only folders"))
    for name in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(case: str, tiny_data: Path, earlier_run: SimpleNamespace,
                                          tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    other_data = write_fake_mnist(tmp_path / "other_data", n_train=64, n_test=16)
    context = SimpleNamespace(tmp=tmp_path, a_file=a_file, run=earlier_run.out, other_data=other_data)
    flags, words = BAD_INPUT[case]
    res = run_cli(["--data_dir", str(tiny_data), "--device", "cpu", "--no_download", *flags(context)])
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(lines) == 1 and lines[0].startswith("my_gan.py: error:"), res.stderr
    assert all(w in lines[0] for w in ((words,) if isinstance(words, str) else words)), lines[0]
    assert folder_bytes(earlier_run.out) == earlier_run.files  # a refused command leaves the earlier run as it was


# ----------------------------------------------------------------------------- an earlier run in --out


def test_overwrite_starts_afresh_and_clears_the_earlier_outputs(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), **{**TINY, "save_interval": 1}))
    (out / "scores.json").write_text("{}\n")  # scores of the earlier generators
    (out / "notes.txt").write_text("mine\n")  # not an output of a run: kept
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), overwrite=True, **TINY))
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["iter_0000000.png", "iter_0000003.png"]
    assert [r["iteration"] for r in read_csv_rows(out / "losses.csv")] == ["4"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 4
    assert not (out / "scores.json").exists() and (out / "notes.txt").read_text() == "mine\n"


def test_resume_and_overwrite_remove_stray_temp_files(tiny_data: Path, tmp_path: Path) -> None:
    """A run killed inside an atomic write leaves .NAME.*.atomic.tmp beside the file; the next run there removes it,
    and leaves the user's own *.tmp files alone."""
    out = tmp_path / "run"
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), **TINY))

    def leave_strays() -> list[Path]:
        strays = [out / ".checkpoint.pt.k3j_x.atomic.tmp", out / "grids" / ".iter_0000006.png.q1.atomic.tmp"]
        for p in strays:
            p.write_bytes(b"half a file")
        return strays

    strays = leave_strays()
    (out / "notes.tmp").write_text("mine")
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), resume=True, **TINY))
    assert not any(p.exists() for p in strays) and (out / "notes.tmp").read_text() == "mine"
    strays = leave_strays()
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), overwrite=True, **TINY))
    assert not any(p.exists() for p in strays)


# ----------------------------------------------------------------------------- stopping early


def test_diverging_run_writes_nothing_non_finite(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "diverged"
    res = run_cli(["--data_dir", str(tiny_data), "--out", str(out), *TINY_FLAGS, "--n_epochs", "3",
                   "--save_interval", "1", "--lr", "1e30"])
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert last.startswith("my_gan.py: error:") and "non-finite" in last, last
    named = re.findall(r"(/\S+?\.(?:pt|png|csv))\b", last)
    assert all(Path(p).is_file() for p in named), named  # it names only files that exist
    for path in out.glob("generator_*.pt"):
        assert all_finite(torch.load(path, weights_only=True)["state_dict"]), path
    if (out / "checkpoint.pt").exists():
        assert all_finite(list(tensors_in(torch.load(out / "checkpoint.pt", weights_only=True))))
    assert not (out / "generator_end.pt").exists()
    for grid in out.rglob("*.png"):
        if grid.name != "losses.png":
            low, high = Image.open(grid).convert("L").getextrema()
            assert low < high, f"{grid} is blank"


def test_ctrl_c_is_one_line_and_exit_130(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    real_step, calls = my_gan.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(my_gan, "train_step", step_then_ctrl_c)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        my_gan.main(["--data_dir", str(tiny_data), "--out", str(out), *TINY_FLAGS, "--n_epochs", "2"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 130
    assert last.startswith("my_gan.py: stopped by SIGINT at iteration 2") and "--resume" in last, last
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 2


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ (POSIX)")
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tiny_data: Path, tmp_path: Path) -> None:
    """Files larger than 10 MB cannot be written (as on a full disk): grids and CSV rows fit, the checkpoint not."""
    import resource

    out = tmp_path / "run"
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), **TINY))
    before = (out / "checkpoint.pt").read_bytes()
    limit = 10 * 2**20
    assert len(before) > limit  # else this test would not test anything

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG

    res = run_cli(["--data_dir", str(tiny_data), "--out", str(out), *TINY_FLAGS, "--n_epochs", "2", "--resume"],
                  preexec_fn=small_files)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert last.startswith("my_gan.py: error: cannot write") and "checkpoint.pt" in last, last
    assert (out / "checkpoint.pt").read_bytes() == before
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 4
    assert not list(out.rglob("*.tmp"))

"""Part 2 GAN: models, the training CLI (smoke run, resume, interrupt, divergence, bad input), real MNIST."""
from __future__ import annotations

import csv
import importlib.machinery
import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import my_gan
from conftest import ROOT, SHARED_MNIST, write_fake_mnist
from models import Discriminator, Dropout, Generator, load_generator
from my_gan import Config, TrainingDiverged, TrainingInterrupted, train

PART2 = ROOT / "part2"
# Tiny runs: 64 fake images, batches of 16 -> 4 iterations per epoch.
TINY = dict(batch_size=16, save_interval=3, seed=3, device="cpu", download=False)


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    """my_gan.py as a user runs it (from the repo root unless cwd says otherwise)."""
    script = "my_gan.py" if cwd == PART2 else str(Path("part2") / "my_gan.py")
    return subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def final_state(out: Path) -> dict[str, torch.Tensor]:
    """Generator, discriminator and (when on) averaged-generator weights of a run's checkpoint."""
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    return {**{"G." + k: v for k, v in ckpt["generator"].items()}, **{"D." + k: v for k, v in ckpt["discriminator"].items()},
            **{"EMA." + k: v for k, v in ckpt.get("generator_ema", {}).items()}}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_mnist(tmp_path_factory.mktemp("tiny"), n_train=64, n_test=16)


@pytest.fixture(scope="module")
def reference_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs straight, in-process, the default bf16 path."""
    out = tmp_path_factory.mktemp("straight")
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), **TINY))
    return out


# ----------------------------------------------------------------------------- models


def test_generator_shape_and_range() -> None:
    torch.manual_seed(0)
    g = Generator(latent_dim=12)
    x = g(torch.randn(7, 12) * 10)  # large z pushes tanh to its limits
    assert x.shape == (7, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() < -0.5 and x.max() > 0.5  # uses the range, not a constant


def test_discriminator_returns_logits() -> None:
    torch.manual_seed(0)
    d = Discriminator()
    with torch.no_grad():
        d.net[-1].bias.fill_(5.0)  # a sigmoid at the end would squash this into (0, 1)
    logits = d(torch.rand(6, 1, 28, 28) * 2 - 1)
    assert logits.shape == (6,)
    assert (logits > 1).any()
    assert d(torch.rand(3, 784)).shape == (3,)  # flat input works too


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_keeps_one_minus_p_and_rescales(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 500, dtype=dtype, requires_grad=True)
    y = Dropout(0.3)(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200,000 draws: std of the rate ~0.001
    assert torch.allclose(y[kept].float(), torch.tensor(1 / 0.7), rtol=1e-2)
    y.float().sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient goes through the kept units only, rescaled
    x = torch.randn(5, 7)
    assert Dropout(0.0)(x) is x and Dropout(0.3).eval()(x) is x


def test_generator_eval_is_batch_independent() -> None:
    torch.manual_seed(0)
    g = Generator(latent_dim=8)
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        g(torch.randn(32, 8) * 2 + 1)
    g.eval()
    z = torch.randn(10, 8)
    with torch.no_grad():
        alone = g(z[:1])
        in_batch = g(torch.cat([z[:1], torch.randn(20, 8) * 5]))[:1]
    assert torch.allclose(alone, in_batch, atol=1e-6)
    g.train()
    with torch.no_grad():  # and in train mode it does depend on the batch (the test can fail)
        assert not torch.allclose(g(z[:2])[:1], g(torch.cat([z[:1], torch.randn(20, 8) * 5]))[:1], atol=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_step_updates_both_networks(precision: str) -> None:
    torch.manual_seed(0)
    g, d = Generator(16), Discriminator()
    opt_g, opt_d = my_gan.make_optimizers(g, d, 1e-3, torch.device("cpu"))
    _, autocast = my_gan.resolve_precision(precision, torch.device("cpu"))
    g0 = [p.detach().clone() for p in g.parameters()]
    d0 = [p.detach().clone() for p in d.parameters()]
    stats = my_gan.train_step(g, d, opt_g, opt_d, torch.rand(8, 1, 28, 28) * 2 - 1, autocast)
    assert stats.shape == (4,) and torch.isfinite(stats).all()
    assert 0 < stats[2] < 1 and 0 < stats[3] < 1  # D(x), D(G(z)) are probabilities
    assert all(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, d.parameters()))
    assert all(p.requires_grad for p in d.parameters())  # the G step gives D's gradients back


def test_refresh_bn_stats_is_deterministic_and_spares_the_rng() -> None:
    g = Generator(16)
    rng = torch.get_rng_state()
    stats = []
    for _ in range(2):
        my_gan.refresh_bn_stats(g, seed=5)
        stats.append([b.clone() for b in g.buffers()])
    assert torch.equal(torch.get_rng_state(), rng)  # training's noise stream is untouched
    assert not g.training and all(m.momentum == 0.1 for m in g.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert all(torch.equal(a, b) for a, b in zip(*stats))
    bn = g.net[3]  # set from activations, not left at the reset values (mean 0, variance 1)
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_saved_generators_are_the_weight_average(reference_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    """With --ema (default) grids and generator_*.pt show the averaged G; with the plain recipe, the live one."""
    ckpt = torch.load(reference_run / "checkpoint.pt", weights_only=True)
    end = torch.load(reference_run / "generator_end.pt", weights_only=True)["state_dict"]
    assert torch.equal(end["net.0.weight"], ckpt["generator_ema"]["net.0.weight"])
    assert not torch.equal(end["net.0.weight"], ckpt["generator"]["net.0.weight"])

    out = tmp_path / "plain"
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), d_dropout=0, label_smoothing=0, ema=0, **TINY))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    end = torch.load(out / "generator_end.pt", weights_only=True)["state_dict"]
    assert "generator_ema" not in ckpt and torch.equal(end["net.0.weight"], ckpt["generator"]["net.0.weight"])


def test_update_ema_matches_torch_averaged_model() -> None:
    """Our lean EMA update is torch.optim.swa_utils' EMA, bit for bit (so either reproduces a run)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    g = Generator(16)
    ours, ref = my_gan.make_ema(g, 0.9), AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    for step in range(4):
        with torch.no_grad():
            for p in g.parameters():
                p.add_(torch.randn_like(p))
        my_gan.update_ema(ours, g, 0.9, first=step == 0)
        ref.update_parameters(g)
        for a, b in zip(ours.parameters(), ref.module.parameters()):
            assert torch.equal(a, b)
    assert my_gan.make_ema(g, 0) is None


def test_lr_decay_schedule() -> None:
    flat, decay = Config(lr=0.01, lr_decay="none"), Config(lr=0.01, lr_decay="linear")
    assert [my_gan.lr_at(flat, i, 100) for i in (0, 50, 99)] == [0.01] * 3
    assert [my_gan.lr_at(decay, i, 100) for i in (0, 50, 75, 100)] == pytest.approx([0.01, 0.01, 0.005, 0.0])


# ----------------------------------------------------------------------------- the CLI


def test_cli_smoke_run(fake_mnist: Path, tmp_path: Path) -> None:
    """One epoch from inside part2/ (256 images, batches of 32 -> 8 iterations)."""
    out = tmp_path / "run"
    res = run_cli(["--n_epochs", "1", "--batch_size", "32", "--save_interval", "3", "--data_dir", str(fake_mnist),
                   "--out", str(out), "--device", "cpu"], cwd=PART2)
    assert res.returncode == 0, res.stderr
    for name in ("config.json", "checkpoint.pt", "losses.csv", "losses.png",
                 "grid_start.png", "grid_half.png", "grid_end.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "grids").iterdir()) == [
        "iter_0000000.png", "iter_0000003.png", "iter_0000006.png"]
    for tag in ("start", "half", "end"):
        g = load_generator(out / f"generator_{tag}.pt")
        assert not g.training and g(torch.randn(2, 100)).shape == (2, 1, 28, 28)
    assert load_generator(out / "checkpoint.pt").latent_dim == 100
    start, end = (torch.load(out / f"generator_{t}.pt", weights_only=True)["state_dict"] for t in ("start", "end"))
    assert not torch.equal(start["net.0.weight"], end["net.0.weight"])  # it trained
    with open(out / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["iteration", "epoch", "loss_d", "loss_g", "d_real", "d_fake"]
    assert rows[-1]["iteration"] == "8" and rows[-1]["epoch"] == "1"
    config = json.loads((out / "config.json").read_text())
    assert config["latent_dim"] == 100 and config["batch_size"] == 32 and "my_gan.py" in config["command"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert {"generator", "discriminator", "opt_g", "opt_d", "epoch", "iteration", "rng", "config",
            "fixed_noise"} <= ckpt.keys()
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 8 and ckpt["fixed_noise"].shape == (25, 100)


def test_resume_equals_straight_run(tiny_data: Path, tmp_path: Path) -> None:
    """1 epoch + --resume to 2 epochs gives bit-identical weights to 2 epochs straight.

    With a constant learning rate: --lr_decay linear ties the schedule to --n_epochs, so raising
    it on resume changes the schedule (an interrupted run of the same length resumes exactly:
    see the Ctrl-C test).
    """
    straight, out = tmp_path / "straight", tmp_path / "halves"
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(straight), lr_decay="none", **TINY))
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), lr_decay="none", **TINY))
    assert not torch.equal(final_state(out)["G.net.0.weight"], final_state(straight)["G.net.0.weight"])
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), lr_decay="none", resume=True, **TINY))
    assert_same_state(final_state(out), final_state(straight))
    with open(out / "losses.csv", newline="") as f:
        assert [r["iteration"] for r in csv.DictReader(f)] == ["4", "8"]


def test_ctrl_c_saves_mid_epoch_and_resumes_exactly(reference_run: Path, tiny_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "interrupted"
    real_step, calls = my_gan.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # the second update of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(my_gan, "train_step", step_then_ctrl_c)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), **TINY))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["iteration"]) == (1, 2, 6)
    monkeypatch.setattr(my_gan, "train_step", real_step)
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), resume=True, **TINY))
    assert_same_state(final_state(out), final_state(reference_run))


def test_non_finite_loss_keeps_last_good_checkpoint(tiny_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "diverged"
    real_step, calls = my_gan.train_step, []

    def step_going_nan(*args, **kwargs):
        calls.append(1)
        stats = real_step(*args, **kwargs)
        return stats * float("nan") if len(calls) > 5 else stats  # diverges in epoch 2

    monkeypatch.setattr(my_gan, "train_step", step_going_nan)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(Config(n_epochs=3, data_dir=str(tiny_data), out=str(out), **TINY))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 4


def test_eval_scores_calls_score_run(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    fake = types.ModuleType("evaluate")
    fake.__spec__ = importlib.machinery.ModuleSpec("evaluate", None)
    fake.score_run = lambda out_dir, data_dir, device: seen.update(out=Path(out_dir), data_dir=data_dir) or {"ok": 1}
    monkeypatch.setitem(sys.modules, "evaluate", fake)
    out = tmp_path / "scored"
    summary = train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), eval_scores=True, **TINY))
    assert seen == {"out": out, "data_dir": str(tiny_data)} and summary["scores"] == {"ok": 1}


# ----------------------------------------------------------------------------- bad input


def bad_input_cases(data: Path, run: Path, tmp: Path) -> list[tuple[list[str], str]]:
    """(extra flags, a word the one-line message must contain)."""
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    corrupt = tmp / "corrupt"
    corrupt.mkdir(exist_ok=True)
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    base = ["--data_dir", str(data), "--device", "cpu", "--no_download"]
    cases = [
        (["--n_epochs", "0"], "--n_epochs"),
        (["--batch_size", "-4"], "--batch_size"),
        (["--lr", "0"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--latent_dim", "0"], "--latent_dim"),
        (["--save_interval", "0"], "--save_interval"),
        (["--threads", "-1"], "--threads"),
        (["--n_epochs", "x"], "--n_epochs"),
        (["--batch_size", "1000", "--out", str(tmp / "big")], "larger than the training set"),
        (["--data_dir", str(empty), "--out", str(tmp / "nodata")], "MNIST"),
        (["--resume", "--out", str(tmp / "nothing_here")], "no checkpoint"),
        (["--resume", "--out", str(corrupt)], "corrupt"),
        (["--resume", "--out", str(run), "--latent_dim", "50", "--batch_size", "16", "--seed", "3"], "--latent_dim"),
        (["--resume", "--out", str(run), "--batch_size", "32", "--seed", "3"], "--batch_size"),
        (["--resume", "--out", str(run), "--batch_size", "16", "--n_epochs", "2"], "already completed"),
        (["--device", "tpu"], "--device"),
        (["--d_dropout", "1"], "--d_dropout"),
        (["--label_smoothing", "-0.1"], "--label_smoothing"),
        (["--ema", "1.5"], "--ema"),
        (["--lr_decay", "cosine"], "--lr_decay"),
        (["--resume", "--out", str(run), "--batch_size", "16", "--seed", "3", "--ema", "0"], "--ema"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "CUDA"))
    return [(base + flags, word) for flags, word in cases]


def test_bad_input_in_process(reference_run: Path, tiny_data: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    """Every case through main(): exit 2, one line on stderr naming the problem, no training."""
    before = final_state(reference_run)
    for argv, word in bad_input_cases(tiny_data, reference_run, tmp_path):
        with pytest.raises(SystemExit) as exc:
            my_gan.main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2, (argv, err)
        assert len(err.splitlines()) == 1 and err.startswith("my_gan.py: error:") and word in err, (argv, err)
    assert_same_state(final_state(reference_run), before)  # a refused resume touches nothing


@pytest.mark.parametrize("which", [0, 9, 15])  # flag check, missing data, argparse (the rest: in-process above)
def test_bad_input_cli(which: int, reference_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    argv, word = bad_input_cases(tiny_data, reference_run, tmp_path)[which]
    res = run_cli(argv)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1 and word in res.stderr


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED_MNIST / "MNIST" / "raw").is_dir(), reason="no offline MNIST at ../shared/mnist")
def test_real_mnist_loads() -> None:
    from mnist_data import load_mnist

    images, labels = load_mnist(SHARED_MNIST, train=True, download=False)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    assert labels.shape == (60000,) and set(labels.unique().tolist()) == set(range(10))

"""Part 2 GAN: models, the update, training runs (smoke, golden values, resume, interrupt, divergence), real MNIST.

The command line's refusals (bad input, an earlier run in --out, a full disk) are in test_part2_gan_cli.py.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import types
from dataclasses import fields
from pathlib import Path

import pytest
import torch

import gan_run
import my_gan
from conftest import ROOT, SHARED_MNIST
from cs324_utils import TrainingFailed, TrainingStopped, UserError, all_finite
from file_checks import tensors_in
from gan_run import read_losses
from models import Discriminator, Dropout, Generator, load_generator, parameter_count, save_generator
from my_gan import Config, train
from pick_precision import autocast_factory
from stabilisers import WeightAverage, lr_at, refresh_bn_stats

PART2 = ROOT / "part2"
# Tiny runs: 64 fake images, batches of 16 -> 4 iterations per epoch.
TINY = dict(batch_size=16, save_interval=3, seed=3, device="cpu", download=False, precision="bf16")  # auto: its own test


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
def reference_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs straight, in-process, in bf16."""
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


def test_parameter_count_matches_the_models() -> None:
    for latent_dim in (1, 16, 100):
        n_g, n_d = parameter_count(latent_dim)
        assert n_g == sum(p.numel() for p in Generator(latent_dim).parameters())
        assert n_d == sum(p.numel() for p in Discriminator(0.1).parameters())


def test_save_generator_refuses_non_finite_weights(tmp_path: Path) -> None:
    g = Generator(8)
    with torch.no_grad():
        g.net[0].weight[0, 0] = 1e6  # finite in float32, inf in float16
    save_generator(g, tmp_path / "fp32.pt")
    with pytest.raises(UserError, match="not finite in float16"):
        save_generator(g, tmp_path / "fp16.pt", half=True)
    with torch.no_grad():
        g.net[0].weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="not finite"):
        save_generator(g, tmp_path / "nan.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.pt"]


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
    opt_g, opt_d = (my_gan.adam(m, 1e-3, torch.device("cpu")) for m in (g, d))
    autocast = autocast_factory(precision, torch.device("cpu"))
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
        refresh_bn_stats(g, seed=5)
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
    ours, ref = WeightAverage(g, 0.9), AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    for step in range(4):
        with torch.no_grad():
            for p in g.parameters():
                p.add_(torch.randn_like(p))
        ours.update(first=step == 0)
        ref.update_parameters(g)
        for a, b in zip(ours.model.parameters(), ref.module.parameters()):
            assert torch.equal(a, b)
    assert WeightAverage(g, 0).model is None and WeightAverage(g, 0).sampler() is g


def test_lr_decay_schedule() -> None:
    assert [lr_at(0.01, "none", i, 100) for i in (0, 50, 99)] == [0.01] * 3
    assert [lr_at(0.01, "linear", i, 100) for i in (0, 50, 75, 100)] == pytest.approx([0.01, 0.01, 0.005, 0.0])


# What this seeded fp32 run gives (64 fake images from write_fake_mnist(n_train=64), TINY, 2 epochs):
# a change to the update, the schedule, the shuffling, the noise or the seeding moves these values,
# while another CPU's float rounding moves them by well under the tolerance.
GOLDEN_LOSSES = [  # losses.csv rows: loss_d, loss_g, d_real, d_fake at iterations 4 and 8
    [0.700866, 0.689003, 0.511279, 0.515920],
    [0.720095, 0.622465, 0.532445, 0.549014],
]
GOLDEN_SUMS = {"G.net.0.weight": -2.697691, "D.net.6.weight": 0.2429737, "EMA.net.11.weight": -8.405162}


def test_seeded_run_matches_golden_values(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "golden"
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), **{**TINY, "precision": "fp32"}))
    rows = read_losses(out / "losses.csv")
    assert [r["iteration"] for r in rows] == ["4", "8"]
    losses = [float(r[k]) for r in rows for k in ("loss_d", "loss_g", "d_real", "d_fake")]
    assert losses == pytest.approx(sum(GOLDEN_LOSSES, []), rel=1e-4, abs=2e-6)
    state = final_state(out)
    assert {k: state[k].double().sum().item() for k in GOLDEN_SUMS} == pytest.approx(GOLDEN_SUMS, rel=1e-4)


# ----------------------------------------------------------------------------- training runs


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


def test_resume_compares_data_dir_by_place_not_spelling(tiny_data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), **TINY))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["config"]["data_dir"] = tiny_data.name  # as typed in the folder above it
    torch.save(ckpt, out / "checkpoint.pt")
    monkeypatch.chdir(tiny_data.parent)
    train(Config(n_epochs=2, data_dir=f"./{tiny_data.name}", out=str(out), resume=True, **TINY))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 8


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
    with pytest.raises(TrainingStopped, match="--resume"):
        train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), **TINY))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["iteration"]) == (1, 2, 6)
    monkeypatch.setattr(my_gan, "train_step", real_step)
    train(Config(n_epochs=2, data_dir=str(tiny_data), out=str(out), resume=True, **TINY))
    assert_same_state(final_state(out), final_state(reference_run))
    # Every file the run writes equals the straight run's: the log, the grids and the saved generators.
    for name in ("losses.csv", *(p.name for p in reference_run.glob("grid*.png")), "grids",
                 *(p.name for p in reference_run.glob("generator_*.pt"))):
        for path in sorted((reference_run / name).rglob("*")) if name == "grids" else [reference_run / name]:
            assert (out / path.relative_to(reference_run)).read_bytes() == path.read_bytes(), path.name


def test_non_finite_loss_keeps_last_good_checkpoint(tiny_data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "diverged"
    real_step, calls = my_gan.train_step, []

    def step_going_nan(*args, **kwargs):
        calls.append(1)
        stats = real_step(*args, **kwargs)
        return stats * float("nan") if len(calls) > 5 else stats  # diverges in epoch 2

    monkeypatch.setattr(my_gan, "train_step", step_going_nan)
    with pytest.raises(TrainingFailed, match="non-finite"):
        train(Config(n_epochs=3, data_dir=str(tiny_data), out=str(out), **TINY))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 4


def test_eval_scores_calls_score_run(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def score_run(out_dir, data_dir, device, download):
        seen.update(out=Path(out_dir), data_dir=data_dir, download=download)
        return {"ok": 1}

    monkeypatch.setattr(gan_run, "load_scorer", lambda: score_run)
    out = tmp_path / "scored"
    summary = train(Config(n_epochs=1, data_dir=str(tiny_data), out=str(out), eval_scores=True, **TINY))
    assert seen == {"out": out, "data_dir": str(tiny_data.resolve()), "download": False}
    assert summary["scores"] == {"ok": 1}


def test_load_scorer_takes_part2_evaluate_whatever_else_is_named_evaluate(monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = types.ModuleType("evaluate")  # as an installed package of that name would be
    impostor.score_run = lambda *args, **kwargs: None
    monkeypatch.setitem(sys.modules, "evaluate", impostor)
    score_run = gan_run.load_scorer()
    assert score_run is not impostor.score_run
    assert Path(sys.modules[score_run.__module__].__file__) == PART2 / "evaluate.py"


def test_every_config_field_is_checked_or_honoured_on_resume() -> None:
    checked, honoured = set(gan_run.RESUME_MUST_MATCH), set(gan_run.RESUME_MAY_CHANGE)
    assert not checked & honoured
    assert checked | honoured == {f.name for f in fields(Config)}


def test_weights_going_non_finite_write_nothing_non_finite(tiny_data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """G's weights turn NaN in epoch 2 while its losses look finite: the half snapshot and the checkpoint refuse."""
    out = tmp_path / "nan_weights"
    real_step, calls = my_gan.train_step, []

    def step_poisoning_g(generator, *args, **kwargs):
        calls.append(1)
        stats = real_step(generator, *args, **kwargs)
        if len(calls) == 5:  # the first update of epoch 2; the halfway snapshot of 3 epochs is at iteration 6
            with torch.no_grad():
                generator.net[0].weight[0, 0] = float("nan")
        return stats

    monkeypatch.setattr(my_gan, "train_step", step_poisoning_g)
    with pytest.raises(TrainingFailed, match="became non-finite by iteration 6") as exc:
        train(Config(n_epochs=3, data_dir=str(tiny_data), out=str(out), **TINY))
    assert str(out / "checkpoint.pt") in str(exc.value)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["iteration"] == 4 and all_finite(list(tensors_in(ckpt)))
    assert sorted(p.name for p in out.glob("generator_*.pt")) == ["generator_start.pt"]


def test_read_csv_rows_leaves_out_a_torn_row(tmp_path: Path) -> None:
    path = tmp_path / "losses.csv"
    path.write_text("iteration,epoch,loss_d,loss_g,d_real,d_fake\n50,1,0.7,0.6,0.5,0.4\n10")
    assert [r["iteration"] for r in read_losses(path)] == ["50"]


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
        (["--resume", "--out", str(run), "--batch_size", "16", "--seed", "3", "--n_epochs", "2"], "already completed"),
        (["--device", "tpu"], "--device"),
        (["--d_dropout", "1"], "--d_dropout"),
        (["--label_smoothing", "-0.1"], "--label_smoothing"),
        (["--ema", "1.5"], "--ema"),
        (["--lr_decay", "cosine"], "--lr_decay"),
        (["--resume", "--out", str(run), "--batch_size", "16", "--seed", "3", "--ema", "0"], "--ema"),
        (["--resume", "--out", str(run), "--batch_size", "16", "--seed", "4"], "--seed"),
        (["--resume", "--out", str(run), "--batch_size", "16", "--seed", "3", "--data_dir", str(empty)], "--data_dir"),
        (["--resume", "--overwrite", "--out", str(run)], "--overwrite"),
        (["--seed", str(2**32)], "--seed"),
        (["--out", str(run), "--batch_size", "16", "--seed", "3"], "--overwrite"),
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


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED_MNIST / "MNIST" / "raw").is_dir(), reason="no offline MNIST at ../shared/mnist")
def test_real_mnist_loads() -> None:
    from mnist_data import load_mnist

    images, labels = load_mnist(SHARED_MNIST, train=True, download=False)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    assert labels.shape == (60000,) and set(labels.unique().tolist()) == set(range(10))


def test_precision_auto_records_its_choice_and_spares_the_seeded_run(tiny_data: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """auto times both precisions on copies under a forked RNG: the run equals one with its choice given."""
    cfg = dict(n_epochs=1, batch_size=16, latent_dim=8, data_dir=str(tiny_data), download=False, threads=1)
    train(Config(**cfg, out=str(tmp_path / "auto")))
    chosen = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert chosen["precision_asked"] == "auto" and chosen["precision"] in ("bf16", "fp32")
    train(Config(**cfg, out=str(tmp_path / "given"), precision=chosen["precision"]))
    assert_same_state(final_state(tmp_path / "auto"), final_state(tmp_path / "given"))
    # A resume with auto continues in the recorded precision, whatever a new timing would say.
    monkeypatch.setattr(gan_run, "choose_precision", lambda *a: pytest.fail("a resume must not re-time"))
    train(Config(**{**cfg, "n_epochs": 2}, out=str(tmp_path / "auto"), resume=True))
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["precision"] == chosen["precision"]


def test_precision_auto_keeps_bf16_only_when_clearly_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    import pick_precision

    g, d = Generator(8), Discriminator()
    for bf16, fp32, want in ((0.80, 1.0, "bf16"), (0.90, 1.0, "fp32"), (1.2, 1.0, "fp32")):
        monkeypatch.setattr(pick_precision, "time_precisions", lambda *a, t={"bf16": bf16, "fp32": fp32}: t)
        assert pick_precision.choose_precision(g, d, 16, torch.device("cpu"))[0] == want

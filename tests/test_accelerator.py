"""Both parts on a GPU (CUDA or Apple's MPS), where one is present; skipped on CPU-only machines.

CI has no GPU, so these run where a developer has one: `make test` on such a machine picks them up.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import ROOT, write_fake_mnist
from lstm import LSTM
from models import load_generator
from my_gan import Config, train
from test_part1_models import grads, to_torch_order
from test_part2_gan import assert_same_state, final_state
from vanilla_rnn import VanillaRNN

DEVICE = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else None
pytestmark = pytest.mark.skipif(DEVICE is None, reason="no GPU (CUDA or MPS) on this machine")


@pytest.fixture(autouse=True)
def full_fp32_matmuls():
    """Compare in true float32: TF32 tensor cores would round the products to 10 mantissa bits."""
    if DEVICE != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("hand_bptt", [True, False])
def test_lstm_on_gpu_matches_cpu_and_torch_lstm(hand_bptt: bool) -> None:
    """The same weights give the same outputs and gradients on the GPU, on the CPU, and in nn.LSTM."""
    torch.manual_seed(0)
    B, T, D, H, C = 8, 20, 10, 32, 10
    cpu = LSTM(T, D, H, C, hand_bptt=hand_bptt)
    gpu = LSTM(T, D, H, C, hand_bptt=hand_bptt).to(DEVICE)
    gpu.load_state_dict(cpu.state_dict())
    ref = nn.LSTM(D, H, batch_first=True).to(DEVICE)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(to_torch_order(gpu.W_x))
        ref.weight_hh_l0.copy_(to_torch_order(gpu.W_h))
        ref.bias_ih_l0.copy_(to_torch_order(gpu.b))
        ref.bias_hh_l0.zero_()
    x, y = torch.randn(B, T, D), torch.randint(0, C, (B,))
    outs = []
    for model, xs, ys in ((cpu, x, y), (gpu, x.to(DEVICE), y.to(DEVICE))):
        out = model(xs)
        nn.functional.cross_entropy(out, ys).backward()
        outs.append((out.detach().cpu(), {k: v.cpu() for k, v in grads(model).items()}))
    (out_cpu, g_cpu), (out_gpu, g_gpu) = outs
    torch.testing.assert_close(out_gpu, out_cpu, atol=1e-5, rtol=1e-4)
    for name in g_cpu:
        torch.testing.assert_close(g_gpu[name], g_cpu[name], atol=1e-5, rtol=1e-4)
    ref_h = ref(x.to(DEVICE))[0][:, -1]
    ref_out = ref_h @ gpu.W_ph.t() + gpu.b_p
    torch.testing.assert_close(ref_out.detach().cpu(), out_gpu, atol=1e-5, rtol=1e-4)
    nn.functional.cross_entropy(ref_out, y.to(DEVICE)).backward()
    torch.testing.assert_close(ref.weight_hh_l0.grad.cpu(), to_torch_order(g_gpu["W_h"]), atol=1e-5, rtol=1e-4)


def test_rnn_on_gpu_matches_cpu() -> None:
    torch.manual_seed(0)
    cpu = VanillaRNN(15, 2, 12, 10)
    gpu = VanillaRNN(15, 2, 12, 10).to(DEVICE)
    gpu.load_state_dict(cpu.state_dict())
    x, y = torch.randn(4, 15, 2), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(cpu(x), y).backward()
    nn.functional.cross_entropy(gpu(x.to(DEVICE)), y.to(DEVICE)).backward()
    for name, p in cpu.named_parameters():
        torch.testing.assert_close(gpu.get_parameter(name).grad.cpu(), p.grad, atol=1e-5, rtol=1e-4)


def test_part1_training_cli_on_gpu(tmp_path: Path) -> None:
    """train.py --device <gpu> trains, writes metrics, and resumes; its checkpoint loads on the CPU."""
    common = [sys.executable, str(ROOT / "part1" / "train.py"), "--device", DEVICE, "--input_length", "6",
              "--data_size", "2000", "--batch_size", "64", "--num_hidden", "32", "--learning_rate", "0.01",
              "--no_progress", "--out", str(tmp_path)]
    done = subprocess.run([*common, "--max_epoch", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*common, "--max_epoch", "3", "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["device"] == DEVICE and len(metrics["history"]) == 3
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gan_on_gpu_trains_resumes_and_loads_on_cpu(precision: str, tmp_path: Path) -> None:
    """A tiny GAN run on the GPU; 1 epoch + resume gives the same weights as 2 straight (same device)."""
    data = write_fake_mnist(tmp_path / "data", n_train=64, n_test=16)
    tiny = dict(batch_size=16, save_interval=3, seed=3, device=DEVICE, download=False, precision=precision,
                lr_decay="none", data_dir=str(data))
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train(Config(n_epochs=2, out=str(straight), **tiny))
    train(Config(n_epochs=1, out=str(halves), **tiny))
    train(Config(n_epochs=2, out=str(halves), resume=True, **tiny))
    assert_same_state(final_state(halves), final_state(straight))
    g = load_generator(straight / "generator_end.pt")  # saved on the GPU, loaded where no GPU is asked for
    assert next(g.parameters()).device.type == "cpu" and g(torch.randn(3, 100)).shape == (3, 1, 28, 28)
    assert (straight / "grid_end.png").is_file()

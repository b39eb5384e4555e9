"""Milliseconds per LSTM training step (forward, backward, clipping, RMSprop) on this machine.

Compares this repository's LSTM (hand-written backward through time with its CPU kernels (fused C cell,
oneDNN matmuls), the same in PyTorch ops, and the same model under plain autograd) with the per-gate formulation most student code uses (eight nn.Linear calls a
step) and with torch.nn.LSTM plus a linear head, all measured in the same run.

    python bench.py                       # batch 128, hidden 128, input lengths 19 and 99
    python bench.py --lengths 19 --steps 50
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import lstm_bptt
import lstm_kernel
from lstm import LSTM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError, pick_device


class PerGateLSTM(nn.Module):
    """The straightforward formulation: one nn.Linear per gate and input, eight calls a step."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.x_proj = nn.ModuleList(nn.Linear(input_dim, hidden_dim) for _ in range(4))
        self.h_proj = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim, bias=False) for _ in range(4))
        self.head = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.hidden_dim)
        c = torch.zeros_like(h)
        for x_t in x.unbind(1):
            g, i, f, o = (wx(x_t) + wh(h) for wx, wh in zip(self.x_proj, self.h_proj))
            c = torch.tanh(g) * torch.sigmoid(i) + c * torch.sigmoid(f)
            h = torch.tanh(c) * torch.sigmoid(o)
        return self.head(h)


class TorchLSTM(nn.Module):
    """torch.nn.LSTM (fused C++ kernels) with a linear head on the last step."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, batch_first=True)
        self.head = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def make_models(length: int, input_dim: int, hidden: int) -> dict[str, nn.Module]:
    return {
        "ours (hand BPTT)": LSTM(length, input_dim, hidden, 10),
        "ours (BPTT, torch ops)": LSTM(length, input_dim, hidden, 10, cpu_kernels=False),
        "ours (autograd)": LSTM(length, input_dim, hidden, 10, hand_bptt=False),
        "per-gate nn.Linear": PerGateLSTM(input_dim, hidden, 10),
        "torch.nn.LSTM": TorchLSTM(input_dim, hidden, 10),
    }


def median_us(fn, reps: int = 300) -> float:
    """Median microseconds of fn() over reps calls, after a short warm-up."""
    for _ in range(20):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def kernel_timings(batch: int, hidden: int) -> list[str]:
    """Per-step costs on the CPU: the element-wise cell (C against PyTorch ops) and the W_h product."""
    B, H = batch, hidden
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(B, 4 * H, generator=gen)
    h_prev, c_prev = torch.randn(B, H, generator=gen), torch.randn(B, H, generator=gen)
    W_h = torch.randn(4 * H, H, generator=gen) / H ** 0.5
    gates, hw, c, tanh_c, h = pre.clone(), torch.zeros(B, 4 * H), torch.empty(B, H), torch.empty(B, H), torch.empty(B, H)

    def cell_torch() -> None:
        lstm_bptt.cell_forward(gates.copy_(pre), c_prev, c, tanh_c, h)

    lines = [f"per-step costs at batch {B}, hidden {H} (microseconds, median):"]
    if lstm_kernel.load() is not None:
        def cell_c() -> None:
            lstm_kernel.forward_step(gates.copy_(pre), hw, c_prev, c, tanh_c, h)

        lines.append(f"  element-wise forward step: C cell {median_us(cell_c):.1f}, PyTorch ops {median_us(cell_torch):.1f} "
                     f"(both include a {4 * B * H}-value copy that resets the input)")
    times_W_h = lstm_kernel.linear(W_h, B)
    backend = "oneDNN, packed W_h" if lstm_kernel.onednn_available() else "torch.mm (no oneDNN in this build)"
    lines.append(f"  W_h h product: lstm_kernel.linear ({backend}) {median_us(lambda: times_W_h(h_prev)):.1f}, "
                 f"torch.mm {median_us(lambda: h_prev @ W_h.t()):.1f}")
    if lstm_kernel.onednn_available():  # twice a training step: W_h, and its transpose for the backward
        fresh = median_us(lambda: torch.ops.mkldnn._reorder_linear_weight(W_h, B))
        kept = median_us(lambda: lstm_kernel.linear(W_h, B))  # copies into the buffer packed above
        lines.append(f"  packing W_h for oneDNN: from scratch {fresh:.1f}, into the kept buffer {kept:.1f}")
    return lines


def time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, device: torch.device) -> float:
    """Median milliseconds of one full training step."""
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[19, 99], help="input lengths (default: 19 99)")
    parser.add_argument("--batch_size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--num_hidden", type=int, default=128, help="hidden units (default: 128)")
    parser.add_argument("--input_dim", type=int, default=1, help="input size (default: 1)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per model and round (default: 60)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept (default: 3)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default: cpu)")
    args = parser.parse_args()
    try:
        if min(args.lengths + [args.batch_size, args.num_hidden, args.input_dim, args.steps, args.rounds]) < 1:
            raise UserError("--lengths, --batch_size, --num_hidden, --input_dim, --steps, --rounds must be >= 1")
        device = pick_device(args.device)
    except UserError as exc:
        print(f"bench.py: error: {exc}", file=sys.stderr)
        sys.exit(2)

    torch.manual_seed(0)
    if device.type != "cpu":
        c_cell = "PyTorch ops (the C cell is CPU only)"
    else:
        c_cell = "C cell built" if lstm_kernel.load() is not None else "no C compiler: PyTorch ops instead of the C cell"
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"batch {args.batch_size}, hidden {args.num_hidden}, input_dim {args.input_dim}; {c_cell}")
    for length in args.lengths:
        x = torch.randn(args.batch_size, length, args.input_dim, device=device)
        y = torch.randint(0, 10, (args.batch_size,), device=device)
        models = {k: m.to(device) for k, m in make_models(length, args.input_dim, args.num_hidden).items()}
        for m in models.values():
            time_steps(m, x, y, 5, device)  # warm-up
        # Interleave rounds so a busy moment on the machine hits every model alike; keep each best.
        best = dict.fromkeys(models, float("inf"))
        for _ in range(args.rounds):
            for k, m in models.items():
                best[k] = min(best[k], time_steps(m, x, y, args.steps, device))
        ref = best["torch.nn.LSTM"]
        print(f"\ninput length {length}: ms per training step (forward+backward+clip+RMSprop)")
        for k, ms in best.items():
            print(f"  {k:<22} {ms:7.2f} ms   {ms / ref:5.2f}x torch.nn.LSTM")
        print(f"  ours (hand BPTT) is {best['per-gate nn.Linear'] / best['ours (hand BPTT)']:.2f}x faster "
              f"than per-gate nn.Linear")
    if device.type == "cpu":
        print("\n" + "\n".join(kernel_timings(args.batch_size, args.num_hidden)))


if __name__ == "__main__":
    main()

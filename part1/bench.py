"""Milliseconds per LSTM training step (forward, backward, clipping, RMSprop) on this machine.

Times this repository's LSTM with the variants lstm_kernel.py chose here, with each forced
variant (the C cell, which does its own products; PyTorch ops with products through oneDNN or
torch.mm), and under plain autograd; against the per-gate formulation most student code uses
(eight nn.Linear calls a step) and torch.nn.LSTM plus a linear head. All in one run, interleaved,
so a busy moment hits all alike. Then the per-step cost of each layer's variants on their own.

    python bench.py                                    # batch 128, hidden 128, lengths 19 and 99
    python bench.py --lengths 19 --steps 5 --rounds 1  # a quick look
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
import lstm_bptt
import lstm_kernel
from cpu_threads import machine_line
from cs324_utils import OneLineParser, UserError, check_fits, pick_device, run_cli
from lstm import LSTM

COMBOS = [("c", "auto"), *(("torch", matmul) for matmul in lstm_kernel.LAYERS["matmul"])]  # the C cell's own products


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


def usable_combos() -> tuple[list[tuple[str, str]], list[str]]:
    """The forced (cell, matmul) combinations this machine can run, and a note for each it cannot."""
    lstm_kernel.load(), lstm_kernel.onednn_available()  # each records why, where it cannot run
    why = lstm_kernel.describe()["fallbacks"]
    missing = {"c": why.get("cell"), "onednn": why.get("matmul"), "torch": None, "mm": None, "auto": None}
    ok = [(c, m) for c, m in COMBOS if not missing[c] and not missing[m]]
    notes = [f"  ours, forced {combo_name(c, m)}: not run ({missing[c] or missing[m]})"
             for c, m in COMBOS if (c, m) not in ok]
    return ok, notes


def combo_name(cell: str, matmul: str) -> str:
    return cell if matmul == "auto" else f"{cell}+{matmul}"


def make_models(length: int, input_dim: int, hidden: int, chosen: str, combos: list[tuple[str, str]]
                ) -> dict[str, tuple[nn.Module, tuple[str, str] | None]]:
    """name -> (model, forced (cell, matmul) or None)."""
    models = {f"ours, as chosen ({chosen})": (LSTM(length, input_dim, hidden, 10), None)}
    for cell, matmul in combos:
        models[f"ours, forced {combo_name(cell, matmul)}"] = (LSTM(length, input_dim, hidden, 10), (cell, matmul))
    models["ours, autograd reference"] = (LSTM(length, input_dim, hidden, 10, hand_bptt=False), None)
    models["per-gate nn.Linear"] = (PerGateLSTM(input_dim, hidden, 10), None)
    models["torch.nn.LSTM"] = (TorchLSTM(input_dim, hidden, 10), None)
    return models


def time_steps(model: nn.Module, force: tuple[str, str] | None, x: torch.Tensor, y: torch.Tensor, steps: int,
               device: torch.device) -> float:
    """Median milliseconds of one full training step, with the forced variants if any."""
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    with lstm_kernel.forcing(*force) if force else contextlib.nullcontext():
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


def bench_length(length: int, args, device: torch.device, chosen: str, combos: list[tuple[str, str]]) -> list[str]:
    """The table for one input length: best median over interleaved rounds, and ratios to nn.LSTM."""
    x = torch.randn(args.batch_size, length, args.input_dim, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    models = make_models(length, args.input_dim, args.num_hidden, chosen, combos)
    models = {k: (m.to(device), force) for k, (m, force) in models.items()}
    for m, force in models.values():
        time_steps(m, force, x, y, 3, device)  # warm-up
    best = dict.fromkeys(models, float("inf"))
    for _ in range(args.rounds):
        for k, (m, force) in models.items():
            best[k] = min(best[k], time_steps(m, force, x, y, args.steps, device))
    ref, ours = best["torch.nn.LSTM"], next(iter(best))
    lines = [f"input length {length}: ms per training step (forward+backward+clip+RMSprop)"]
    lines += [f"  {k:<34} {ms:8.2f} ms   {ms / ref:5.2f}x torch.nn.LSTM" for k, ms in best.items()]
    lines.append(f"  {ours} is {best['per-gate nn.Linear'] / best[ours]:.2f}x faster than per-gate nn.Linear")
    return lines


def layer_timings(batch: int, hidden: int, budget_s: float) -> list[str]:
    """Each layer's variants on their own, interleaved, at this batch and hidden size (CPU only)."""
    B, H = batch, hidden
    mm_forward, mm_backward = lstm_bptt.torch_matmuls(B, H)
    lines = [f"per-layer costs at batch {B}, hidden {H}, {torch.get_num_threads()} threads "
             "(microseconds, median of interleaved calls):"]
    for K, N, what in ((H, 4 * H, "forward h W_h^T"), (4 * H, H, "backward da W_h")):
        if lstm_kernel.onednn_available():
            us = lstm_kernel.time_interleaved(lstm_kernel.matmul_candidates(B, K, N), budget_s, 10_000)
            lines.append(f"  matmul {B}x{K}x{N} ({what}): oneDNN {us['onednn']:.1f}, torch.mm {us['mm']:.1f}")
    if lstm_kernel.load() is not None:
        us = lstm_kernel.time_interleaved(lstm_bptt.cell_candidates(B, H, mm_forward, mm_backward), budget_s, 10_000)
        T = lstm_bptt.CELL_TIMING_STEPS
        lines.append(f"  cell, a {T}-step forward and backward pass, products included: C (its own) {us['c']:.1f}, "
                     f"PyTorch ops ({mm_forward}/{mm_backward}) {us['torch']:.1f}")
    if lstm_kernel.onednn_available():  # twice a training step: W_h, and its transpose for the backward
        W_h = torch.randn(4 * H, H, generator=torch.Generator().manual_seed(0))
        us = lstm_kernel.time_interleaved({
            "fresh": lambda: torch.ops.mkldnn._reorder_linear_weight(W_h, B),  # PRIVATE operator
            "kept": lambda: lstm_kernel.linear(W_h, B, "onednn"),  # copies into the buffer packed before
        }, budget_s, 10_000)
        lines.append(f"  packing W_h for oneDNN: from scratch {us['fresh']:.1f}, into the kept buffer {us['kept']:.1f}")
    return lines


def step_parts(length: int, args, rounds: int = 10) -> list[str]:
    """Where a training step of the C cell goes at this length, against the floor of its products: the
    forward and backward recurrences (one C call each), the weight gradient of W_h (one torch.mm), and the
    rest of the step; each the fastest of `rounds`. The products' GFLOP/s beside the machine's rate for the
    same product shape through torch.mm (CPU only, the C cell built)."""
    T, B, H = length, args.batch_size, args.num_hidden
    rng = torch.Generator().manual_seed(0)
    model = LSTM(T, args.input_dim, H, 10)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    x, y = torch.randn(B, T, args.input_dim, generator=rng), torch.randint(0, 10, (B,), generator=rng)
    pre, W_h = torch.randn(T, B, 4 * H, generator=rng), torch.randn(4 * H, H, generator=rng) / H ** 0.5
    gates, tanh_c = torch.empty(T, B, 4 * H), torch.empty(T, B, H)
    c, h, grad_h = torch.zeros(T + 1, B, H), torch.zeros(T + 1, B, H), torch.randn(B, H, generator=rng)
    grad_a, hs = torch.randn(T * B, 4 * H, generator=rng), torch.randn(T * B, H, generator=rng)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()

    def forward() -> None:
        gates.copy_(pre)
        lstm_kernel.forward(gates, W_h.t().contiguous(), c, tanh_c, h)

    parts = {"copy of the input projection": lambda: gates.copy_(pre),
             "forward recurrence (C)": forward,
             "forward and backward recurrence (C)": lambda: (forward(), lstm_kernel.backward(gates, c, tanh_c, grad_h,
                                                                                             W_h)),
             "weight gradient of W_h (torch.mm)": lambda: grad_a[B:].t() @ hs[:(T - 1) * B],
             "whole step": step,
             "same product shape as the recurrence, torch.mm": lambda: hs[:B] @ W_h.t()}
    with lstm_kernel.forcing("c"):
        ms = {k: lstm_kernel.time_interleaved({k: f}, 0, rounds, min)[k] / 1000 for k, f in parts.items()}
    forward = ms["forward recurrence (C)"] - ms["copy of the input projection"]
    backward = ms["forward and backward recurrence (C)"] - ms["forward recurrence (C)"]
    grad_w, whole = ms["weight gradient of W_h (torch.mm)"], ms["whole step"]
    flops_rec, flops_w = 2 * 2 * T * B * H * 4 * H, 2 * (T - 1) * B * H * 4 * H
    rate = 2 * B * H * 4 * H / ms["same product shape as the recurrence, torch.mm"] / 1e6
    floor = (flops_rec + flops_w) / rate / 1e6
    return [f"input length {T}: where a training step of the C cell goes (ms, fastest of {rounds})",
            f"  forward recurrence {forward:.2f}, backward recurrence {backward:.2f}, weight gradient of W_h "
            f"{grad_w:.2f}, the rest (input projection, head, loss, clipping, RMSprop) {whole - forward - backward - grad_w:.2f}; "
            f"whole step {whole:.2f}",
            f"  products: {(flops_rec + flops_w) / 1e9:.2f} GFLOP, {(flops_rec + flops_w) / whole / 1e6:.0f} GFLOP/s over the "
            f"whole step; torch.mm does this product shape at {rate:.0f} GFLOP/s, so the products alone would take "
            f"{floor:.1f} ms ({100 * floor / whole:.0f}% of the step)"]


def parse_args(argv: list[str] | None = None):
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[19, 99], help="input lengths (default: 19 99)")
    parser.add_argument("--batch_size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--num_hidden", type=int, default=128, help="hidden units (default: 128)")
    parser.add_argument("--input_dim", type=int, default=1, help="input size (default: 1)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per model and round (default: 60)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept (default: 3)")
    parser.add_argument("--layer_seconds", type=float, default=0.5,
                        help="seconds spent timing each layer's variants on their own (default: 0.5)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default: cpu)")
    return parser.parse_args(argv)


def run(args) -> None:
    sizes = args.lengths + [args.batch_size, args.num_hidden, args.input_dim, args.steps, args.rounds]
    if min(sizes) < 1:
        raise UserError("--lengths, --batch_size, --num_hidden, --input_dim, --steps, --rounds must be >= 1")
    if not 0 <= args.layer_seconds <= 60:
        raise UserError(f"--layer_seconds must be from 0 to 60, got {args.layer_seconds}")
    # The models' activations: about a dozen (T, B, H) float32 blocks each, eight models.
    check_fits(8 * 12 * 4 * max(args.lengths) * args.batch_size * args.num_hidden,
               "--lengths/--batch_size/--num_hidden")
    device = pick_device(args.device)
    lstm_kernel.check_environment()
    torch.manual_seed(0)
    print(f"{machine_line()}; device {device}, {torch.get_num_threads()} threads; "
          f"batch {args.batch_size}, hidden {args.num_hidden}, input_dim {args.input_dim}")
    combos, notes = usable_combos() if device.type == "cpu" else ([], [])
    if device.type == "cpu":
        lstm_bptt.plan(args.batch_size, args.num_hidden)  # the choices the "as chosen" model will train with
    info = lstm_kernel.describe(device)
    chosen = combo_name(info['cell'], 'auto' if info['cell'] == 'c' else info['matmul'])
    print(f"lstm_kernel chose cell {info['cell']} ({info['how']['cell']}), matmul {info['matmul']} "
          f"({info['how']['matmul']}); its timings (us): {info['timings_us']}")
    for length in args.lengths:
        print("\n" + "\n".join(bench_length(length, args, device, chosen, combos) + notes))
        if device.type == "cpu" and lstm_kernel.load() is not None:
            print("\n".join(step_parts(length, args)))
    if device.type == "cpu" and args.layer_seconds > 0:
        print("\n" + "\n".join(layer_timings(args.batch_size, args.num_hidden, args.layer_seconds)))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_cli("bench.py", lambda: run(args))


if __name__ == "__main__":
    main()

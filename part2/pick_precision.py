"""--precision auto: time one G+D forward and backward in bf16 autocast and in float32, keep the faster.

Which one wins depends on the processor: on an AMD EPYC with AVX-512 BF16 the bf16 loop is 1.4-1.6x
faster (part2/results/bench_gan.txt), while on other CPUs, and on a GPU where these small layers
are launch-bound, bf16 can only add casts (my_gan.py uses float32 there). So on a CPU it is measured
on the machine at hand, in a fraction of a second, on copies of the models and under a forked random
state: the run's own weights and random streams are untouched. Each precision counts its fastest
round, since another job on the machine only ever adds time. bf16 must win by MARGIN to be chosen,
so that timing noise cannot flip a close call between two runs on one machine (the choice changes
the rounding, and so a seeded run's exact numbers). The choice is printed and saved in config.json.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Callable

import torch
from torch import nn

MARGIN = 0.9  # bf16 is chosen only when its step takes less than this fraction of float32's
WARMUP, ROUNDS = 3, 9


def autocast_factory(precision: str, device: torch.device) -> Callable[[], Any]:
    """The context each forward pass runs in: bf16 autocast (float32 master weights) or nothing."""
    if precision == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def time_precisions(generator: nn.Module, discriminator: nn.Module, batch_size: int,
                    device: torch.device) -> dict[str, float]:
    """Seconds of one G forward + D forward and backward on 3 batch_size rows, per precision (fastest round)."""
    G, D = copy.deepcopy(generator).train(), copy.deepcopy(discriminator).train()
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(batch_size, G.latent_dim, generator=rng).to(device)
    real = (torch.rand(batch_size, 1, 28, 28, generator=rng) * 2 - 1).to(device)
    contexts = {p: autocast_factory(p, device) for p in ("fp32", "bf16")}
    times: dict[str, list[float]] = {p: [] for p in contexts}
    with torch.random.fork_rng(devices=[]):  # dropout draws here must not shift the run's stream
        for r in range(WARMUP + ROUNDS):
            for precision, autocast in (contexts.items() if r % 2 else reversed(contexts.items())):
                t0 = time.perf_counter()
                with autocast():
                    fake = G(z)
                    logits = D(torch.cat([real.to(fake.dtype), fake])).float()
                    logits_gen = D(fake).float()
                (logits.sum() + logits_gen.sum()).backward()
                if r >= WARMUP:
                    times[precision].append(time.perf_counter() - t0)
    return {p: min(t) for p, t in times.items()}


def choose_precision(generator: nn.Module, discriminator: nn.Module, batch_size: int,
                     device: torch.device) -> tuple[str, str, dict[str, float]]:
    """("bf16" or "fp32", a one-line reason with the timings, the seconds of a step per precision) for
    --precision auto on a CPU."""
    t = time_precisions(generator, discriminator, batch_size, device)
    choice = "bf16" if t["bf16"] < MARGIN * t["fp32"] else "fp32"
    return choice, f"measured bf16 {1000 * t['bf16']:.1f} ms vs fp32 {1000 * t['fp32']:.1f} ms a step", t

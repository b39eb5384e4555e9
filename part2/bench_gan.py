"""Seconds per epoch of my_gan.py's training loop against a conventional pipeline, same models, same run.

    python part2/bench_gan.py --data_dir ../shared/mnist

Both train the same models with my_gan.py's default recipe (dropout in D, one-sided label
smoothing, a moving average of G's weights; the learning-rate schedule costs nothing and is left out).
Conventional: torchvision MNIST through a DataLoader with ToTensor/Normalize per sample, float32,
torch.nn.Dropout, default Adam, one update of D then G per batch (G runs forward twice, as in the course template),
the average kept with torch.optim.swa_utils.AveragedModel.
Ours: my_gan.py's loop on the whole training set held as one tensor, bf16 autocast and fp32.
Both time a fixed number of iterations after a warm-up, interleaved in rounds so that load from other
processes hits them alike, and extrapolate to an epoch of N // batch_size iterations.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for cs324_utils
from cs324_utils import UserError, pick_device, set_seed
from models import Dropout
from my_gan import Config, build_models, make_optimizers, resolve_precision, train_step, update_ema

HERE = Path(__file__).resolve().parent

PROG = "bench_gan.py"


def conventional_loop(data_dir: str, batch_size: int, latent_dim: int, device: torch.device) -> Callable[[], None]:
    """One call = one iteration of the template-style pipeline (DataLoader + float32 + two G forwards)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    loader = DataLoader(datasets.MNIST(data_dir, train=True, download=False, transform=tf),
                        batch_size=batch_size, shuffle=True, drop_last=True)
    recipe = Config(latent_dim=latent_dim)
    G, D, _ = build_models(recipe, device)
    for i, module in enumerate(D.net):  # the stock module, not models.Dropout's cheaper mask
        if isinstance(module, torch.nn.Dropout):
            D.net[i] = torch.nn.Dropout(module.p)
    ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=False)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            real, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            real, _ = next(batches)
        real = real.to(device)
        b = real.shape[0]
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        real_target = torch.full((b,), 1.0 - recipe.label_smoothing, device=device)
        z = torch.randn(b, latent_dim, device=device)
        opt_d.zero_grad()
        loss_d = (F.binary_cross_entropy_with_logits(D(real), real_target)
                  + F.binary_cross_entropy_with_logits(D(G(z).detach()), zeros)) / 2
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = F.binary_cross_entropy_with_logits(D(G(z)), ones)
        loss_g.backward()
        opt_g.step()
        ema.update_parameters(G)
        loss_d.item()  # the template logs both losses every iteration

    return step


def our_loop(images: torch.Tensor, batch_size: int, latent_dim: int, precision: str, device: torch.device,
             mark: Callable[[str], None] = lambda phase: None) -> Callable[[], None]:
    """One call = one iteration of my_gan.py's loop (gather from the on-device set, train_step, EMA).

    mark(phase) is called as each phase ends, inside train_step too (breakdown times them).
    """
    recipe = Config(latent_dim=latent_dim)
    G, D, ema = build_models(recipe, device)
    opt_g, opt_d = make_optimizers(G, D, 2e-4, device)
    _, autocast = resolve_precision(precision, device)
    n = images.shape[0]
    gen = torch.Generator().manual_seed(0)
    state = {"perm": torch.randperm(n, generator=gen).to(device), "b": 0, "iteration": 0}

    def step() -> None:
        if (state["b"] + 1) * batch_size > n:
            state["perm"], state["b"] = torch.randperm(n, generator=gen).to(device), 0
        b = state["b"]
        real = images[state["perm"][b * batch_size:(b + 1) * batch_size]]
        mark("data")
        train_step(G, D, opt_g, opt_d, real, autocast, 1.0 - recipe.label_smoothing, mark=mark)
        if ema is not None:
            update_ema(ema, G, recipe.ema, first=state["iteration"] == 0)
        mark("EMA of G")
        state["b"] += 1
        state["iteration"] += 1

    return step


def breakdown(images: torch.Tensor, batch_size: int, latent_dim: int, precision: str,
              device: torch.device, iters: int) -> dict[str, float]:
    """ms per iteration of each phase of our_loop's iteration, timed at its marks (CPU only)."""
    parts: dict[str, float] = {}
    last = 0.0

    def mark(phase: str) -> None:
        nonlocal last
        now = time.perf_counter()
        parts[phase] = parts.get(phase, 0.0) + now - last
        last = now

    step = our_loop(images, batch_size, latent_dim, precision, device, mark=mark)
    for i in range(iters + 20):
        if i == 20:
            parts.clear()  # the warm-up is not timed
        last = time.perf_counter()
        step()
    return {phase: seconds * 1000 / iters for phase, seconds in parts.items()}


def dropout_masks(batch_size: int, p: float, device: torch.device) -> str:
    """ms per iteration that D's dropout masks cost: nn.Dropout against models.Dropout, forward only.

    An iteration runs D on 2B rows (D step) and on B rows (G step), through 512 and 256 units, in bf16.
    """
    x = torch.randn(3 * batch_size, 512 + 256, device=device, dtype=torch.bfloat16)
    costs = {}
    for name, module in (("nn.Dropout", torch.nn.Dropout(p)), ("models.Dropout", Dropout(p))):
        costs[name] = min(time_rounds({name: lambda: module(x)}, 20, 200, 4)[name])
    return (f"dropout masks at p={p} (ms/iter, forward): "
            + ", ".join(f"{name} {ms:.2f}" for name, ms in costs.items()))


def time_rounds(loops: dict[str, Callable[[], None]], warmup: int, iters: int, rounds: int) -> dict[str, list[float]]:
    """ms per iteration of each loop, measured in interleaved rounds of iters // rounds iterations."""
    for step in loops.values():
        for _ in range(warmup):
            step()
    per_round = max(iters // rounds, 1)
    result: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, step in loops.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # queued GPU work belongs to this round
            result[name].append((time.perf_counter() - t0) * 1000 / per_round)
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse flags, time both pipelines, print the table."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=str(HERE / "data"), help="MNIST root (holds MNIST/raw/)")
    p.add_argument("--batch_size", type=int, default=64, help="images per update")
    p.add_argument("--latent_dim", type=int, default=100, help="dimension of z")
    p.add_argument("--iters", type=int, default=200, help="timed iterations per pipeline (after warm-up)")
    p.add_argument("--warmup", type=int, default=30, help="untimed iterations per pipeline first")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds the timed iterations are split into")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"], help="where to run")
    p.add_argument("--no_breakdown", action="store_true", help="skip the per-phase timing")
    args = p.parse_args(argv)
    try:
        if min(args.batch_size, args.latent_dim, args.iters, args.warmup + 1, args.rounds) <= 0:
            raise UserError("--batch_size, --latent_dim, --iters and --rounds must be positive")
        device = pick_device(args.device)
        from mnist_data import load_mnist

        images, _ = load_mnist(args.data_dir, train=True, download=False)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = images.to(device)
    iters_per_epoch = images.shape[0] // args.batch_size
    set_seed(0)
    print(f"{PROG}: {device}, {torch.get_num_threads()} threads, batch {args.batch_size}; "
          f"{args.warmup} warm-up + {args.iters} timed iterations per pipeline in {args.rounds} interleaved "
          f"rounds, extrapolated to an epoch of {iters_per_epoch} iterations (load average at start: "
          f"{' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())})")
    loops = {
        "conventional (DataLoader, fp32)": conventional_loop(args.data_dir, args.batch_size, args.latent_dim, device),
        "my_gan fp32": our_loop(images, args.batch_size, args.latent_dim, "fp32", device),
        "my_gan bf16": our_loop(images, args.batch_size, args.latent_dim, "bf16", device),
    }
    times = time_rounds(loops, args.warmup, args.iters, args.rounds)
    base = statistics.median(times["conventional (DataLoader, fp32)"])
    print(f"{'pipeline':34s} {'ms/iter (median of rounds)':>27s} {'s/epoch':>8s} {'speed-up':>9s}  rounds (ms/iter)")
    for name, ms in times.items():
        med = statistics.median(ms)
        print(f"{name:34s} {med:27.2f} {med * iters_per_epoch / 1000:8.2f} {base / med:8.2f}x  "
              f"{' '.join(f'{m:.1f}' for m in ms)}")
    best = statistics.median(times["my_gan bf16"])
    print(f"200 epochs at defaults, extrapolated: conventional {base * iters_per_epoch * 200 / 60000:.1f} min, "
          f"my_gan bf16 {best * iters_per_epoch * 200 / 60000:.1f} min (target < 15 min, 4.8 ms/iter)")
    if not args.no_breakdown and device.type == "cpu":
        from torch.utils.data import DataLoader
        from torchvision import datasets, transforms

        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
        loader = iter(DataLoader(datasets.MNIST(args.data_dir, train=True, download=False, transform=tf),
                                 batch_size=args.batch_size, shuffle=True))
        t0 = time.perf_counter()
        for _ in range(100):
            next(loader)
        print(f"conventional DataLoader alone: {(time.perf_counter() - t0) * 10:.2f} ms/batch")
        print(dropout_masks(args.batch_size, Config().d_dropout, device))
        for precision in ("fp32", "bf16"):
            parts = breakdown(images, args.batch_size, args.latent_dim, precision, device, args.iters // 2)
            print(f"my_gan {precision} breakdown (ms/iter, sum {sum(parts.values()):.2f}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()

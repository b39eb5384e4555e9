"""Milliseconds per iteration of my_gan.py against conventional loops of the same models, in one run.

    python part2/bench_gan.py --data_dir ../shared/mnist

The loops, timed in interleaved rounds so that load from other processes hits them alike:
- plain conventional (template recipe): what most students write, as PyTorch-GAN's gan.py does it:
  torchvision MNIST through a DataLoader with per-sample ToTensor/Normalize, float32, no
  stabilisers, default (for-loop) Adam, both losses read every iteration. The speed-ups are against it.
- conventional + the stabilisers: the same pipeline carrying my_gan.py's recipe (torch.nn.Dropout
  in D, one-sided label smoothing, AveragedModel for the weight average; G runs forward twice).
- my_gan loop, fp32 / bf16: my_gan.train_step and the weight average on the whole training set
  held as one tensor, without logging or snapshots.
- my_gan.py at defaults, whole epoch: `python my_gan.py --n_epochs 1` into a scratch folder, in a
  process of its own as a user runs it, so the weight average, the loss log, sample grids,
  snapshots and the checkpoint are all paid for; its start-up (Python and torch, data loading,
  --precision auto's probe) is reported apart, as it is paid once a run. It runs --script_runs
  times, one after each of the loops' first rounds; the row gives the median.
Loop rows extrapolate a fixed number of iterations, after a warm-up, to an epoch of N // batch_size.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cpu_threads import machine_line
from cs324_utils import OneLineParser, UserError, check_threads, pick_device, run_cli, set_seed
from file_checks import read_json
from models import Discriminator, Dropout, Generator
from my_gan import Config, adam, train_step
from pick_precision import autocast_factory
from stabilisers import WeightAverage

HERE = Path(__file__).resolve().parent

PROG = "bench_gan.py"
PLAIN = "plain conventional (template recipe)"


def loader_batches(data_dir: str, batch_size: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """next_batch() -> (B, 1, 28, 28) on the device, as a template script gets them: torchvision MNIST
    through a DataLoader with per-sample ToTensor/Normalize, reshuffled at the end of each pass."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    loader = DataLoader(datasets.MNIST(data_dir, train=True, download=False, transform=tf),
                        batch_size=batch_size, shuffle=True, drop_last=True)
    batches = iter(loader)

    def next_batch() -> torch.Tensor:
        nonlocal batches
        try:
            real, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            real, _ = next(batches)
        return real.to(device)

    return next_batch


def conventional_loop(data_dir: str, batch_size: int, latent_dim: int, device: torch.device) -> Callable[[], None]:
    """One call = one iteration of the template-style pipeline (DataLoader + float32 + two G forwards)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    next_batch = loader_batches(data_dir, batch_size, device)
    recipe = Config(latent_dim=latent_dim)
    G, D = Generator(latent_dim).to(device), Discriminator(recipe.d_dropout).to(device)
    for i, module in enumerate(D.net):  # the stock module, not models.Dropout's cheaper mask
        if isinstance(module, torch.nn.Dropout):
            D.net[i] = torch.nn.Dropout(module.p)
    ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=False)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step() -> None:
        real = next_batch()
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


def plain_loop(data_dir: str, batch_size: int, latent_dim: int, device: torch.device) -> Callable[[], None]:
    """One call = one iteration of the loop most students write: the course template's recipe as in
    PyTorch-GAN's gan.py (DataLoader with per-sample ToTensor/Normalize, float32, no stabilisers,
    one G forward per batch, G updated first, both losses read every iteration)."""
    next_batch = loader_batches(data_dir, batch_size, device)
    G, D = Generator(latent_dim).to(device), Discriminator(0.0).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step() -> None:
        real = next_batch()
        b = real.shape[0]
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        z = torch.randn(b, latent_dim, device=device)
        fake = G(z)
        opt_g.zero_grad()
        loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        loss_g.backward()
        opt_g.step()
        opt_d.zero_grad()
        loss_d = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)) / 2
        loss_d.backward()
        opt_d.step()
        loss_d.item(), loss_g.item()

    return step


def our_loop(images: torch.Tensor, batch_size: int, latent_dim: int, precision: str,
             device: torch.device) -> tuple[Callable[[], None], dict[str, torch.nn.Module]]:
    """One call = one iteration of my_gan.py's loop (gather from the on-device set, train_step, EMA);
    also returns the models and optimisers it trains (breakdown hooks into them)."""
    recipe = Config(latent_dim=latent_dim)
    G, D = Generator(latent_dim).to(device), Discriminator(recipe.d_dropout).to(device)
    average = WeightAverage(G, recipe.ema, recipe.seed)
    opt_g, opt_d = adam(G, 2e-4, device), adam(D, 2e-4, device)
    autocast = autocast_factory(precision, device)
    n = images.shape[0]
    gen = torch.Generator().manual_seed(0)
    state = {"perm": torch.randperm(n, generator=gen).to(device), "b": 0, "iteration": 0}

    def step() -> None:
        if (state["b"] + 1) * batch_size > n:
            state["perm"], state["b"] = torch.randperm(n, generator=gen).to(device), 0
        b = state["b"]
        real = images[state["perm"][b * batch_size:(b + 1) * batch_size]]
        train_step(G, D, opt_g, opt_d, real, autocast, 1.0 - recipe.label_smoothing)
        average.update(first=state["iteration"] == 0)
        state["b"] += 1
        state["iteration"] += 1

    return step, {"G": G, "opt_d": opt_d, "opt_g": opt_g}


def breakdown(images: torch.Tensor, batch_size: int, latent_dim: int, precision: str,
              device: torch.device, iters: int) -> dict[str, float]:
    """ms per iteration of each phase of our_loop's iteration (CPU only).

    The phases end where hooks of the real models and optimisers fire (G's forward hook, each
    optimiser's step pre- and post-hooks), so the step timed is train_step itself, unchanged.
    """
    step, parts_of = our_loop(images, batch_size, latent_dim, precision, device)
    parts: dict[str, float] = {}
    last = [0.0]

    def mark(phase: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            now = time.perf_counter()
            parts[phase] = parts.get(phase, 0.0) + now - last[0]
            last[0] = now
        return hook

    parts_of["G"].register_forward_hook(mark("noise + G forward"))
    parts_of["opt_d"].register_step_pre_hook(mark("D step: D forward and backward"))
    parts_of["opt_d"].register_step_post_hook(mark("Adam D"))
    parts_of["opt_g"].register_step_pre_hook(mark("G step: D forward, backward through D and G"))
    parts_of["opt_g"].register_step_post_hook(mark("Adam G"))
    ema_mark = mark("data, weight average of G")
    for i in range(iters + 20):
        if i == 20:
            parts.clear()  # the warm-up is not timed
        last[0] = time.perf_counter()
        step()
        ema_mark()
    return {phase: seconds * 1000 / iters for phase, seconds in parts.items()}


G_LAYERS = ((128, 256), (256, 512), (512, 1024), (1024, 784))  # after the first, (latent_dim, 128)
D_LAYERS = ((784, 512), (512, 256), (256, 1))


def phase_products(batch_size: int, latent_dim: int) -> dict[str, list[tuple[str, int, int, int]]]:
    """The matrix products of one iteration, by breakdown phase: (kind, M, K, N) with kind "x W^T" (forward),
    "g W" (gradient to the input) or "g^T x" (gradient to the weight)."""
    g = ((latent_dim, 128), *G_LAYERS)
    B = batch_size
    fwd = lambda m, layers: [("x W^T", m, k, n) for k, n in layers]  # noqa: E731
    g_in = lambda m, layers: [("g W", m, n, k) for k, n in layers]  # noqa: E731
    g_w = lambda m, layers: [("g^T x", n, m, k) for k, n in layers]  # noqa: E731
    return {
        "noise + G forward": fwd(B, g),
        "D step: D forward and backward": fwd(2 * B, D_LAYERS) + g_w(2 * B, D_LAYERS) + g_in(2 * B, D_LAYERS[1:]),
        "G step: D forward, backward through D and G": fwd(B, D_LAYERS) + g_in(B, D_LAYERS) + g_w(B, g)
        + g_in(B, g[1:]),
    }


def product_ms(products: list[tuple[str, int, int, int]], dtype: torch.dtype, device: torch.device) -> float:
    """Milliseconds the products take alone, each timed by itself (the fastest of a few rounds): the
    iteration's floor on this machine for the work that is arithmetic."""
    total = 0.0
    for kind, M, K, N in products:  # C (M, N) = A (M, K) B (K, N), each operand laid out as in training
        r = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
        if kind == "x W^T":
            a, w = r(M, K), r(N, K)
            call = lambda a=a, w=w: a @ w.t()  # noqa: E731
        elif kind == "g W":
            a, w = r(M, K), r(K, N)
            call = lambda a=a, w=w: a @ w  # noqa: E731
        else:
            g, x = r(K, M), r(K, N)
            call = lambda g=g, x=x: g.t() @ x  # noqa: E731
        total += min(time_rounds({kind: call}, 5, 40, 4)[kind])
    return total


def against_floor(parts: dict[str, float], batch_size: int, latent_dim: int, precision: str,
                  device: torch.device) -> str:
    """Each phase's milliseconds beside its products' GFLOP, the GFLOP/s it achieved, and what the same
    products take alone; then the whole iteration's achieved GFLOP/s against the machine's for its shapes."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    lines, flops_all, floor_all = [], 0.0, 0.0
    for phase, products in phase_products(batch_size, latent_dim).items():
        flops = sum(2 * M * K * N for _, M, K, N in products)
        floor = product_ms(products, dtype, device)
        flops_all, floor_all = flops_all + flops, floor_all + floor
        lines.append(f"  {phase:45s} {parts.get(phase, float('nan')):6.2f} ms  {flops / 1e9:5.3f} GFLOP  "
                     f"{flops / parts.get(phase, float('nan')) / 1e6:6.0f} GFLOP/s  (its products alone: {floor:.2f} ms)")
    total = sum(parts.values())
    lines.append(f"  whole iteration: {total:.2f} ms for {flops_all / 1e9:.3f} GFLOP of products = "
                 f"{flops_all / total / 1e6:.0f} GFLOP/s; the same products alone take {floor_all:.2f} ms "
                 f"({flops_all / floor_all / 1e6:.0f} GFLOP/s, this machine's rate for these shapes in {precision}), "
                 f"{100 * floor_all / total:.0f}% of the iteration")
    return "\n".join(lines)


def whole_script(data_dir: str, batch_size: int, latent_dim: int, device: torch.device) -> dict[str, float]:
    """One epoch of `python my_gan.py` at its defaults, as a user starts it (its own process, so its
    own start-up settings), into a scratch folder: what a run does per iteration (weight average,
    logging, sample grids, snapshots, checkpoint) from its summary line, and its start-up.
    It runs with the benchmark's device, sizes and thread count, so its row compares with the others."""
    import re
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gan"
        cmd = [sys.executable, str(HERE / "my_gan.py"), "--n_epochs", "1", "--data_dir", data_dir, "--no_download",
               "--out", str(out), "--device", str(device), "--batch_size", str(batch_size),
               "--latent_dim", str(latent_dim), "--threads", str(torch.get_num_threads())]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        summary = re.search(r"(\d+) iterations in ([\d.]+) s", done.stdout)
        if done.returncode != 0 or summary is None:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"my_gan.py failed (exit {done.returncode}): {last}")
        precision = read_json(out / "config.json", "my_gan.py's config").str("precision", ("bf16", "fp32"))
    iterations, seconds = int(summary[1]), float(summary[2])
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith("my_gan.py: ")))  # its own lines
    return {"ms_per_iter": 1000 * seconds / iterations, "startup_s": wall - seconds, "precision": precision}


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=str(HERE / "data"), help="MNIST root (holds MNIST/raw/)")
    p.add_argument("--batch_size", type=int, default=64, help="images per update")
    p.add_argument("--latent_dim", type=int, default=100, help="dimension of z")
    p.add_argument("--iters", type=int, default=200, help="timed iterations per loop (after warm-up)")
    p.add_argument("--warmup", type=int, default=30, help="untimed iterations per loop first")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds the timed iterations are split into")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--script_runs", type=int, default=3,
                   help="one-epoch runs of the whole my_gan.py script, one after each of the first rounds")
    p.add_argument("--no_breakdown", action="store_true", help="skip the per-phase timing")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    """Time the loops in interleaved rounds (the whole script's epochs between them), print the table."""
    if min(args.batch_size, args.latent_dim, args.iters, args.warmup + 1, args.rounds, args.script_runs + 1) <= 0:
        raise UserError("--batch_size, --latent_dim, --iters and --rounds must be positive, --script_runs >= 0")
    check_threads(args.threads)
    device = pick_device(args.device)
    from mnist_data import load_mnist

    images, _ = load_mnist(args.data_dir, train=True, download=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = images.to(device)
    per_epoch = images.shape[0] // args.batch_size
    set_seed(0)
    print(f"{PROG}: {machine_line()}; {device}, {torch.get_num_threads()} threads, batch {args.batch_size}; "
          f"{args.warmup} warm-up + {args.iters} timed iterations per loop in {args.rounds} interleaved rounds, "
          f"extrapolated to an epoch of {per_epoch} iterations (load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    loops = {
        PLAIN: plain_loop(args.data_dir, args.batch_size, args.latent_dim, device),
        "conventional + the stabilisers": conventional_loop(args.data_dir, args.batch_size, args.latent_dim, device),
        "my_gan loop, fp32": our_loop(images, args.batch_size, args.latent_dim, "fp32", device)[0],
        "my_gan loop, bf16": our_loop(images, args.batch_size, args.latent_dim, "bf16", device)[0],
    }
    # The whole script's epochs run between the loops' rounds, so that a slow spell of the machine
    # meets both; each row then takes the median of its samples.
    times: dict[str, list[float]] = {name: [] for name in loops}
    scripts: list[dict[str, float]] = []
    for r in range(args.rounds):
        for name, ms in time_rounds(loops, args.warmup if r == 0 else 0, args.iters // args.rounds, 1).items():
            times[name] += ms
        if r < args.script_runs:
            scripts.append(whole_script(args.data_dir, args.batch_size, args.latent_dim, device))
    base = statistics.median(times[PLAIN])
    print(f"{'loop':38s} {'ms/iter (median of rounds)':>27s} {'s/epoch':>8s} {'speed-up':>9s}  rounds (ms/iter)")
    for name, ms in times.items():
        med = statistics.median(ms)
        print(f"{name:38s} {med:27.2f} {med * per_epoch / 1000:8.2f} {base / med:8.2f}x  "
              f"{' '.join(f'{m:.1f}' for m in ms)}")
    if scripts:
        ms = statistics.median(run["ms_per_iter"] for run in scripts)
        startup = statistics.median(run["startup_s"] for run in scripts)
        chosen = "/".join(sorted({run["precision"] for run in scripts}))
        samples = " ".join(f"{run['ms_per_iter']:.1f}" for run in scripts)
        print(f"{'my_gan.py at defaults, whole epoch':38s} {ms:27.2f} {ms * per_epoch / 1000:8.2f} {base / ms:8.2f}x  "
              f"{samples} (--precision auto chose {chosen}; start-up {startup:.1f} s once a run)")
        print(f"whole script at defaults / {PLAIN}: {base / ms:.2f}x faster; 200 epochs extrapolated: "
              f"{ms * per_epoch * 200 / 60000:.1f} min against {base * per_epoch * 200 / 60000:.1f} min")
    if not args.no_breakdown and device.type == "cpu":
        print(dropout_masks(args.batch_size, Config().d_dropout, device))
        for precision in ("fp32", "bf16"):
            parts = breakdown(images, args.batch_size, args.latent_dim, precision, device, args.iters // 2)
            print(f"my_gan loop {precision} breakdown (ms/iter, sum {sum(parts.values()):.2f}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
            print(against_floor(parts, args.batch_size, args.latent_dim, precision, device))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_cli(PROG, lambda: run(args))


if __name__ == "__main__":
    main()

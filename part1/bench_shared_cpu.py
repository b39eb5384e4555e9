"""Part 1's training speed alone and beside a running my_gan.py: do two jobs share the CPU fairly?

    python part1/bench_shared_cpu.py --data_dir ../shared/mnist
    python part1/bench_shared_cpu.py --data_dir ../shared/mnist --part1_args "--threads 2" --gan_args "--threads 2"

Runs `train.py --input_length 20` for --steps steps alone, then again while `my_gan.py` trains in
another process, then alone once more; each as the user would start it (a new process, the
scripts' defaults plus the extra arguments given). Prints part 1's steps per second in each
phase and the GAN's iterations per second alone and beside part 1 (from its losses.csv).
With N cores and two busy jobs, a fair share is half the machine: about 2x slower.
"""
from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from cpu_threads import machine_line
from cs324_utils import OneLineParser, UserError, run_cli
from file_checks import read_json

HERE = Path(__file__).resolve().parent
PART2 = HERE.parent / "part2"
PROG = "bench_shared_cpu.py"
GAN_ROW_ITERATIONS = 50  # my_gan.py writes one losses.csv row per 50 iterations


def part1_rate(out: Path, steps: int, extra: list[str]) -> tuple[float, int]:
    """(steps per second of train.py's loop, threads it used) for one fresh run."""
    cmd = [sys.executable, str(HERE / "train.py"), "--input_length", "20", "--max_steps", str(steps),
           "--eval_every", str(steps), "--out", str(out), "--no_progress", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"train.py failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    metrics = read_json(out / "metrics.json", "train.py's metrics")
    return metrics.int("steps", 1) / metrics.number("wall_time_s", 1e-9), metrics.int("threads", 1)


def gan_rows(out: Path) -> int:
    path = out / "losses.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def gan_rate(out: Path, seconds: float) -> float:
    """GAN iterations per second over the next `seconds`, from its losses.csv rows."""
    rows0, t0 = gan_rows(out), time.perf_counter()
    time.sleep(seconds)
    return (gan_rows(out) - rows0) * GAN_ROW_ITERATIONS / (time.perf_counter() - t0)


def start_gan(out: Path, data_dir: str, extra: list[str], log: Path) -> subprocess.Popen:
    """my_gan.py at its defaults in the background; returns once it has logged its first losses."""
    cmd = [sys.executable, str(PART2 / "my_gan.py"), "--data_dir", data_dir, "--no_download", "--out", str(out), *extra]
    with log.open("w") as out_file:  # the child keeps its own copy of the descriptor
        gan = subprocess.Popen(cmd, stdout=out_file, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while gan_rows(out) < 2:
        if gan.poll() is not None or time.time() > deadline:
            gan.kill()
            raise UserError(f"my_gan.py did not start training; see its output: {log.read_text()[-300:]}")
        time.sleep(0.5)
    return gan


def run(args: argparse.Namespace) -> None:
    if args.steps < 10 or args.gan_seconds <= 0:
        raise UserError("--steps must be >= 10 and --gan_seconds > 0")
    if not (Path(args.data_dir) / "MNIST" / "raw").is_dir():
        raise UserError(f"--data_dir {args.data_dir}: no MNIST/raw/ there (my_gan.py needs MNIST)")
    p1, gan_extra = shlex.split(args.part1_args), shlex.split(args.gan_args)
    print(f"{PROG}: {machine_line()}; part 1: train.py --input_length 20 {args.part1_args} ({args.steps} steps); "
          f"GAN: my_gan.py {args.gan_args}".rstrip())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        alone, threads = part1_rate(tmp / "alone", args.steps, p1)
        gan = start_gan(tmp / "gan", args.data_dir, gan_extra, tmp / "gan.log")
        try:
            gan_alone = gan_rate(tmp / "gan", args.gan_seconds)
            rows0, t0 = gan_rows(tmp / "gan"), time.perf_counter()
            beside, threads_beside = part1_rate(tmp / "beside", args.steps, p1)
            gan_beside = (gan_rows(tmp / "gan") - rows0) * GAN_ROW_ITERATIONS / (time.perf_counter() - t0)
        finally:
            gan.send_signal(signal.SIGINT)  # my_gan.py saves and stops; the folder goes with tmp
            try:
                gan.wait(60)
            except subprocess.TimeoutExpired:
                gan.kill()
        gan_first_line = next((line for line in (tmp / "gan.log").read_text().splitlines()
                               if line.startswith("my_gan.py: ")), "(no first line)")
        after, _ = part1_rate(tmp / "after", args.steps, p1)
    print(f"GAN: {gan_first_line}")
    print(f"part 1 alone:        {alone:7.1f} steps/s ({threads} threads)")
    print(f"part 1 beside GAN:   {beside:7.1f} steps/s ({threads_beside} threads): {alone / beside:.2f}x slower")
    print(f"part 1 alone again:  {after:7.1f} steps/s")
    print(f"GAN alone / beside part 1: {gan_alone:.1f} / {gan_beside:.1f} iterations/s "
          f"({gan_alone / max(gan_beside, 1e-9):.2f}x slower)")


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", default=str(PART2 / "data"), help="MNIST root for my_gan.py (holds MNIST/raw/)")
    p.add_argument("--steps", type=int, default=1500, help="training steps of each part 1 run")
    p.add_argument("--gan_seconds", type=float, default=10.0, help="seconds the GAN's own rate is measured alone")
    p.add_argument("--part1_args", default="", help="extra train.py arguments, e.g. \"--threads 2\"")
    p.add_argument("--gan_args", default="", help="extra my_gan.py arguments, e.g. \"--threads 2\"")
    args = p.parse_args(argv)
    run_cli(PROG, lambda: run(args))


if __name__ == "__main__":
    main()

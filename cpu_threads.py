"""The CPU a script runs on: a one-line description, the cores other jobs leave idle, torch's thread count.

torch's threads spin-wait for each other between operations, so a run that keeps more threads than
there are idle cores slows severalfold when another job holds one (part1/results/bench_shared_cpu.txt).
set_threads takes the idle cores at start-up; ThreadGovernor follows them during a long run.
"""
from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import torch

from cs324_utils import check_threads

TORCH_THREADS = torch.get_num_threads()  # torch's own default, before any run changes it


def machine_line() -> str:
    """Processor (with the vector extensions that decide which kernels win), cores and torch version."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    extensions = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in info.get("flags", "").split()]
    return (f"{model}{', ' + ' '.join(extensions) if extensions else ''}, {os.cpu_count()} logical CPUs, "
            f"torch {torch.__version__}")


def _usable_cpus() -> set[int] | None:
    """The CPUs this process may run on (its affinity), or None where the system cannot say."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cpu_times() -> tuple[float, float] | None:
    """(busy seconds of all other processes, seconds of wall time x cores) so far, over the CPUs this
    process may use, from /proc (Linux); our own time is subtracted in full, as it runs on those CPUs."""
    usable = _usable_cpus()
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (usable is not None and int(name[3:]) not in usable):
            continue
        values = [int(v) for v in fields[:8]]  # guest time is already counted in user time
        total += sum(values)
        busy += sum(values) - values[3] - values[4]  # all but idle and iowait
    if total == 0:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    mine = int(own[11]) + int(own[12])  # utime + stime of this process
    return (busy - mine) / ticks, total / ticks


def _idle_between(before: tuple[float, float] | None, after: tuple[float, float] | None) -> int | None:
    """Cores that other processes left idle between two _cpu_times() readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    usable = _usable_cpus()
    cores = len(usable) if usable else (os.cpu_count() or 1)
    busy = cores * (after[0] - before[0]) / (after[1] - before[1])
    # A core that others kept busy a third of the time is taken: our threads would wait on it.
    return max(0, math.floor(cores - busy + 0.3))


def free_cores(seconds: float = 0.25) -> int | None:
    """Cores that other processes left idle over a short sample, or None where /proc cannot tell."""
    before = _cpu_times()
    time.sleep(seconds)
    return _idle_between(before, _cpu_times())


class ThreadGovernor:
    """For long runs with --threads 0: every `every` seconds, follow the cores other jobs leave idle.

    A job started beside a running one takes only the idle cores, but the running one keeps its
    threads, which then spin-wait for partners the other job has descheduled: both crawl. So a
    long run looks again now and then and sets torch's thread count to the idle cores (at least 1,
    at most `most`). The count changes the rounding of some sums: a run repeats bit for bit only
    with a fixed --threads, which switches this off.
    """

    def __init__(self, most: int, every: float = 5.0) -> None:
        self.most, self.every = most, every
        self.last, self.reading = time.monotonic(), _cpu_times()
        self.changes = 0

    def check(self) -> None:
        """Cheap unless `every` seconds have passed since the last look."""
        if time.monotonic() - self.last < self.every:
            return
        reading = _cpu_times()
        idle = _idle_between(self.reading, reading)
        self.last, self.reading = time.monotonic(), reading
        if idle is None:
            return
        want = max(1, min(self.most, idle))
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
            self.changes += 1


def set_threads(threads: int) -> tuple[int, str]:
    """Apply --threads; 0 picks the cores free at start-up. Returns (threads used, how they were chosen).

    torch's default, one thread per core, spin-waits for its partner threads between operations;
    when another job holds a core, every operation waits for a descheduled thread and a run can
    slow down tenfold. So a run takes only the cores that are idle when it starts (never more
    than torch's default, which honours OMP_NUM_THREADS), and keeps that number to the end:
    the thread count changes the rounding of some sums, so a seeded run repeats bit for bit only
    with the same --threads.
    """
    check_threads(threads)
    if threads:
        torch.set_num_threads(threads)
        return threads, "--threads"
    default = TORCH_THREADS
    free = free_cores() if default > 1 else None
    if free is None:
        torch.set_num_threads(default)
        return default, "torch's default"
    chosen = max(1, min(default, free))
    torch.set_num_threads(chosen)
    usable = _usable_cpus()
    return chosen, f"{free} of {len(usable) if usable else os.cpu_count()} cores idle at start"

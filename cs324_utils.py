"""Helpers both parts share: one-line errors, the device, seeds, threads, and writes that never tear.

Part 1 and part 2 scripts put the repository root on sys.path and import this one file, so
there is a single copy of each helper. Every command-line error is a UserError: the scripts
print it as one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import math
import os
import platform
import random
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
SEED_MAX = 2**32 - 1  # numpy's seed range; torch and random accept it too
THREADS_MAX = 1024
TMP_SUFFIX = ".atomic.tmp"  # atomic_write's temp files: .NAME.XXXX.atomic.tmp beside NAME
TORCH_THREADS = torch.get_num_threads()  # torch's own default, before any run changes it


class UserError(Exception):
    """A problem with what the user asked for; CLIs print it as one line and exit 2."""


class TrainingFailed(Exception):
    """Training went wrong (a non-finite loss or weights, a failed check); nothing bad was saved; CLIs exit 1."""


class TrainingStopped(Exception):
    """Ctrl-C between updates: the checkpoint has been saved; CLIs print the message and exit 130."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), like every other error of these scripts."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_cli(prog: str, body: Callable[[], Any]) -> Any:
    """Call body(); each way of stopping early is one line on stderr and an exit code: 2 for bad input
    (UserError), 1 for a failed training (TrainingFailed), 130 after Ctrl-C."""
    try:
        return body()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingFailed as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except TrainingStopped as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)


def pick_device(name: str = "auto") -> torch.device:
    """Resolve --device once: auto, cpu, cuda, cuda:N or mps; refuse one that is not present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:[0-9]+)?", str(name), flags=re.ASCII):
        raise UserError(f"--device: unknown device {name!r} (choose auto, cpu, cuda, cuda:N or mps)")
    kind, _, index = str(name).partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available (use --device cpu or auto)")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine (use --device cpu or auto)")
    return torch.device(name)


def check_seed(seed: int) -> int:
    """Refuse a seed that numpy cannot take (it must fit in 0 .. 2**32 - 1)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UserError(f"--seed must be an integer from 0 to {SEED_MAX}, got {seed!r}")
    return seed


def set_seed(seed: int) -> None:
    """Seed every RNG a run touches."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_threads(threads: int) -> int:
    """Refuse a --threads value torch cannot take (0 means torch's default)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= THREADS_MAX:
        raise UserError(f"--threads must be 0 (torch's default) or from 1 to {THREADS_MAX}, got {threads!r}")
    return threads


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, at import, before any thread starts
    os.umask(umask)
    return umask


UMASK = _read_umask()


def file_mode() -> int:
    """The permissions a plain open() gives a new file (under the umask the process started with)."""
    return 0o666 & ~UMASK


def _os_error(path: Path, exc: OSError) -> UserError:
    reason = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or type(exc).__name__)
    return UserError(f"cannot write {path}: {reason}")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), then rename over path: an interrupted run never leaves a torn file.

    The file gets the permissions a plain open() would give (mkstemp alone makes it private),
    and a failed write (full disk, read-only folder) leaves the old file as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise _os_error(path, exc) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def remove_stray_tmp(folder: str | Path) -> list[Path]:
    """Delete the temp files that atomic writes killed half-way left in folder (only those: their names
    are .NAME.XXXX.atomic.tmp); returns what was removed. Call it only where no other run is writing."""
    removed = [p for p in Path(folder).glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for p in removed:
        p.unlink()
    return removed


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically: serialised in memory, then written by atomic_write.

    torch.save straight to a file reports a full disk or a file-size limit as a RuntimeError
    ("unexpected pos ...") that names neither; a plain write of the bytes raises the OSError
    that atomic_write turns into one line, and the old file stays as it was.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def write_json(obj: Any, path: str | Path) -> None:
    """JSON, atomically, so a reader never sees half a file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def safe_load(path: str | Path, what: str = "checkpoint") -> dict:
    """torch.load(weights_only=True) with one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, unpickler and permission errors all end the run the same way
        raise UserError(f"{what} {path} is corrupt or not a PyTorch file ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} {path} does not hold a dictionary of tensors")
    return obj


def check_writable_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create the folder if needed and prove a file can be written there, before any work is done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write there ({exc.strerror or type(exc).__name__})") from None
    return path


def all_finite(tensors: dict[str, torch.Tensor] | Any) -> bool:
    """Whether every floating-point tensor of a state dict (or an iterable of tensors) is finite."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return all(bool(torch.isfinite(t).all()) for t in values
               if isinstance(t, torch.Tensor) and t.is_floating_point())


def repo_relative(path: str | Path) -> str:
    """A path relative to the repository when inside it, so committed JSON holds no machine-specific paths."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check_resume_or_overwrite(resume: bool, overwrite: bool, what: str = "run") -> None:
    """--resume continues what --out holds and --overwrite replaces it: refuse both at once, at the door."""
    if resume and overwrite:
        raise UserError(f"--resume continues the {what} in --out and --overwrite starts it afresh; give one of them")


def refuse_existing_run(out: str | Path, markers: tuple[str, ...], resume: bool, overwrite: bool) -> None:
    """Stop before a new run writes over an earlier one: a folder holding any of `markers` is a run.

    --resume continues it; --overwrite starts afresh in it, which the user then asked for by name.
    """
    out = Path(out)
    found = [m for m in markers if (out / m).exists()]
    if found and not resume and not overwrite:
        raise UserError(f"--out {out} already holds a run ({found[0]}); continue it with --resume, "
                        f"start afresh there with --overwrite, or choose another --out")


def refuse_replacing(path: str | Path, overwrite: bool) -> None:
    """Stop before a result file that exists is replaced, unless --overwrite asked for it by name."""
    if Path(path).exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it, or choose another --out")


def memory_bytes() -> int:
    """Memory this machine could still give a run (MemAvailable on Linux, else physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: let the allocation itself decide


def check_fits(nbytes: float, what: str, device: torch.device | None = None) -> None:
    """Refuse a size whose tensors cannot fit in memory (the GPU's free memory on CUDA), naming the
    flag and the memory it needs."""
    if device is not None and device.type == "cuda":
        have, where = torch.cuda.mem_get_info(device)[0], f"{device} has"
    else:
        have, where = memory_bytes(), "this machine has"
    if nbytes > have:
        raise UserError(f"{what} needs about {nbytes / 2**30:.1f} GiB of memory; "
                        f"{where} {have / 2**30:.1f} GiB available")


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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit systems; blocks above it are mmap'd
TRIM_THRESHOLD = 1 << 30   # free memory the heap may hold before returning it to the kernel


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (a no-op elsewhere); True if it took effect.

    A training step allocates and frees the same multi-megabyte tensors every iteration (a GAN
    weight's bf16 copy, its gradient). By default glibc returns blocks of that size to the kernel
    when they are freed, so the next step takes a page fault for every 4 KB of them again (about
    100 a GAN iteration). With both thresholds raised, freed blocks up to 32 MB stay in the heap:
    the numbers computed are the same; the process keeps its peak memory.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag that a training loop reads between updates.

    An exception raised inside an update could leave a model half-updated; stopping between
    updates makes the saved checkpoint exact. A second Ctrl-C interrupts at once.
    """
    flag = {"stop": False}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C behaves as usual
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)

"""The core both parts share: one-line errors and exits, the device, seeds, and writes that never tear.

Every command-line error is a UserError: run_cli prints it as one line and exits with code 2.
Entry-point scripts put the repository root on sys.path (one line) and import this file.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import random
import re
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
RESULTS = (ROOT / "part1" / "results", ROOT / "part2" / "results")  # committed: written only with --overwrite
SEED_MAX = 2**32 - 1  # numpy's seed range; torch and random accept it too
THREADS_MAX = 1024
TMP_SUFFIX = ".atomic.tmp"  # atomic_write's temp files: .NAME.XXXX.atomic.tmp beside NAME
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, `kill` and schedulers, a closed terminal


class UserError(Exception):
    """A problem with what the user asked for; CLIs print it as one line and exit 2."""


class TrainingFailed(Exception):
    """Training went wrong (a non-finite loss or weights, a failed check); nothing bad was saved; CLIs exit 1."""


class TrainingStopped(Exception):
    """A stop signal between updates: the checkpoint has been saved; CLIs exit 128 + the signal's number."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) outside a training loop: the script ends at once."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), like every other error of these scripts."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def raise_stopped(signum: int, frame: Any) -> None:
    """Signal handler: SIGTERM and SIGHUP end the script like Ctrl-C does, as an exception that run_cli reports."""
    raise Stopped(signum)


def run_cli(prog: str, body: Callable[[], Any]) -> Any:
    """Call body(); each way of stopping early is one line on stderr and an exit code: 2 for bad input
    (UserError), 1 for a failed training (TrainingFailed), 128 + the signal after Ctrl-C, SIGTERM or SIGHUP."""
    with contextlib.suppress(ValueError):  # ValueError: not the main thread, where signals cannot be caught
        for signum in STOP_SIGNALS:
            signal.signal(signum, raise_stopped)
    for stream in (sys.stdout, sys.stderr):  # a path the terminal cannot encode is escaped, not a traceback
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
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
        sys.exit(128 + exc.signum)
    except KeyboardInterrupt as exc:  # Ctrl-C (or Stopped) before or after the training loop
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"{prog}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        sys.exit(128 + signum)
    except BrokenPipeError:  # output piped into a reader that went away (`| head`)
        sys.exit(1)


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


def check_out(out: str | Path, resume: bool = False, overwrite: bool = False, what: str = "run",
              flag: str = "--out") -> Path:
    """The door check of an output folder, before any work: names the file system can take; inside the
    committed results (part1/results, part2/results) nothing is written without --overwrite, a resume
    included (there --resume --overwrite continues the committed run); elsewhere --resume (continue
    what --out holds) and --overwrite (start afresh there) contradict each other."""
    out = check_names(out, flag)
    if is_committed(out):
        if not overwrite:
            raise UserError(f"{flag} {out} is inside the committed results ({repo_relative(committed_root(out))}); "
                            f"choose another {flag}, or add --overwrite to write there")
    elif resume and overwrite:
        raise UserError(f"--resume continues the {what} in {flag} and --overwrite starts it afresh; give one of them")
    return out


def check_names(path: str | Path, flag: str) -> Path:
    """Refuse a path the file system cannot hold: an empty one, a NUL byte, a name longer than its limit."""
    text = str(path)
    if not text or "\0" in text:
        raise UserError(f"{flag} must be a path, got {text!r}")
    path = Path(path)
    limit = 255  # NAME_MAX of ext4, xfs, btrfs, APFS and NTFS
    with contextlib.suppress(OSError, ValueError, AttributeError):
        existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.is_dir())
        limit = os.pathconf(existing, "PC_NAME_MAX")
    long = next((part for part in path.parts if len(os.fsencode(part)) > limit), None)
    if long is not None:
        raise UserError(f"{flag}: the name {long[:40]!r}... is {len(os.fsencode(long))} bytes, "
                        f"over the file system's limit of {limit}")
    return path


def committed_root(path: str | Path) -> Path | None:
    """The committed results folder that holds path, or None."""
    path = Path(path).resolve()
    return next((r for r in RESULTS if path == r or path.is_relative_to(r)), None)


def is_committed(path: str | Path) -> bool:
    return committed_root(path) is not None


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
    """Stop before a result file that exists, or any file in the committed results, is written without --overwrite."""
    path = Path(path)
    if not overwrite and (path.exists() or is_committed(path)):
        where = "exists" if path.exists() else f"would be written into the committed results ({repo_relative(committed_root(path))})"
        raise UserError(f"{path} {where}; pass --overwrite to write it, or choose another --out")


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



"""What both training scripts need around their loop, the same for both parts.

    with hold_folder(out, prog):        # a second run on this folder is refused while this one runs
        with StopRequests() as stop:    # Ctrl-C, SIGTERM, SIGHUP: the loop finishes its update and saves
            ...
            if stop.signum:
                save the checkpoint; raise stop.stopped("...")   # exit 128 + the signal's number
            stop.end()                  # the loop is over: a signal now ends the script at once

check_same_settings: a resume must train the same problem (the settings each part names).
check_budget: a step budget that could not finish in a year is refused before anything is written.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cs324_utils import STOP_SIGNALS, Stopped, TrainingStopped, UserError, check_writable_dir, file_mode
from file_checks import Fields

LOCK_NAME = ".run.lock"  # inside the run folder while a run holds it; removed when the run ends
YEAR_S = 365.25 * 24 * 3600
CHECK_ABOVE = 10**6  # updates; below this no budget can take a year


class StopRequests:
    """`with StopRequests() as stop:` around a training loop: a stop signal only sets stop.signum, since an
    exception inside an update could leave a model half-updated; the loop stops between updates and its
    checkpoint is exact. A second signal stops at once. stop.end() closes the window when the loop is over."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        def handler(signum: int, frame: Any) -> None:
            if self.signum:
                raise Stopped(signum)
            self.signum = signum

        with contextlib.suppress(ValueError):  # not the main thread: signals behave as they did
            self._previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def end(self) -> None:
        """The loop is over: a signal from here on ends the script at once, and one that came during the
        last update ends it now (a scheduler that sent SIGTERM must not see exit code 0)."""
        self.__exit__()
        if self.signum:
            raise Stopped(self.signum)

    def stopped(self, message: str) -> TrainingStopped:
        return TrainingStopped(f"stopped by {signal.Signals(self.signum).name} {message}", self.signum)


@contextlib.contextmanager
def hold_folder(folder: str | Path, prog: str) -> Iterator[Path]:
    """Lock `folder` (created if need be) for one run: an advisory lock (flock) on a file inside it, which
    the system releases when the process ends however it ends, so a crash leaves no stale lock."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    check_writable_dir(folder)
    try:
        import fcntl
    except ImportError:  # not POSIX: runs are not locked
        yield folder
        return
    fd = _lock(folder / LOCK_NAME, prog, fcntl)
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_NAME)
        os.close(fd)
        for path in created:  # a run refused at its door leaves no empty folder behind
            with contextlib.suppress(OSError):
                path.rmdir()


def _lock(path: Path, prog: str, fcntl: Any) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another run"
            os.close(fd)
            raise UserError(f"--out {path.parent} is in use by {holder}; wait for it to end, or choose another "
                            f"--out") from None
        try:  # the run that held it may have removed the file between our open and our lock: take a fresh one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{prog} (pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
    return fd


def same_setting(name: str, saved: Any, value: Any) -> bool:
    """Whether a checkpoint's setting equals the run's; folders by where they are, not how they were typed."""
    if name.endswith("_dir") and isinstance(saved, str) and isinstance(value, str):
        return Path(saved).resolve() == Path(value).resolve()
    return saved == value


def check_same_settings(saved: Fields, config: Any, names: Sequence[str], defaults: Any = None) -> None:
    """Refuse a resume whose settings `names` differ from the checkpoint's (a missing one counts as
    its value in `defaults`, for checkpoints older than the setting)."""
    for name in names:
        value = getattr(config, name)
        old = saved.raw(name, getattr(defaults, name)) if defaults is not None else saved.raw(name)
        if not same_setting(name, old, value):
            raise UserError(f"--resume: {saved.path} was made with --{name} {old}, not {value}; "
                            f"resume with the same value, or start afresh with --overwrite")


def check_budget(steps: int, seconds_per_step: Callable[[], float], flags: str) -> None:
    """Refuse a step budget that would take over a year at the speed measured on this machine (measured only
    when the budget is large enough that it might)."""
    if steps <= CHECK_ABOVE:
        return
    per_step = seconds_per_step()
    seconds = min(float(steps), 1e300) * per_step
    if seconds > YEAR_S:
        years = f"{seconds / YEAR_S:,.0f}" if seconds < 1e15 * YEAR_S else f"{seconds / YEAR_S:.1e}"
        raise UserError(f"{flags} asks for {'more than 1e300' if steps > 1e300 else f'{steps:,}'} updates: about "
                        f"{years} years at the {1000 * per_step:.2f} ms an update measured here; ask for fewer")

"""The helpers both parts share (cs324_utils, cpu_threads): file permissions, refusals, seeds, threads."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

import cpu_threads
import cs324_utils
import gan_run
from cs324_utils import UserError


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    """mkstemp makes files private (0600); a TA reading a student's results must be able to open them."""
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        cs324_utils.write_json({"a": 1}, tmp_path / "a.json")
        cs324_utils.atomic_save({"w": torch.ones(2)}, tmp_path / "w.pt")
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o644
    for name in ("a.json", "w.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want
    assert cs324_utils.safe_load(tmp_path / "w.pt")["w"].sum() == 2


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "kept.json"
    cs324_utils.write_json({"old": True}, path)

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match="no space left"):
        cs324_utils.atomic_write(path, fail)
    assert path.read_text().strip().startswith("{") and "old" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["kept.json"]


def test_only_atomic_temp_files_count_as_strays(tmp_path: Path) -> None:
    mine = tmp_path / "draft.tmp"
    mine.write_text("the user's")
    stray = tmp_path / ".ckpt.pt.ab12.atomic.tmp"
    stray.write_text("half")
    assert cs324_utils.remove_stray_tmp(tmp_path) == [stray] and mine.exists()


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5])
def test_seeds_outside_numpys_range_are_refused(seed: object) -> None:
    with pytest.raises(UserError, match="--seed"):
        cs324_utils.check_seed(seed)  # type: ignore[arg-type]


def test_replacing_a_result_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    cs324_utils.refuse_replacing(path, overwrite=False)  # nothing there yet
    path.write_text("{}")
    with pytest.raises(UserError, match="--overwrite"):
        cs324_utils.refuse_replacing(path, overwrite=False)
    cs324_utils.refuse_replacing(path, overwrite=True)


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cpu:0", "mps:1", ""])
def test_unknown_devices_are_one_line_errors(name: str) -> None:
    with pytest.raises(UserError, match="--device"):
        cs324_utils.pick_device(name)


def readings(monkeypatch: pytest.MonkeyPatch, others_busy_cores: list[float]) -> None:
    """Fake /proc readings: between consecutive readings, other processes kept this many cores busy."""
    cores = len(os.sched_getaffinity(0))
    state = {"busy": 0.0, "total": 0.0, "i": 0}

    def fake() -> tuple[float, float]:
        i = min(state["i"], len(others_busy_cores) - 1)
        state["busy"] += others_busy_cores[i]
        state["total"] += cores
        state["i"] += 1
        return state["busy"], state["total"]

    monkeypatch.setattr(cpu_threads, "_cpu_times", fake)


def test_threads_follow_the_cores_other_jobs_leave_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to share")
    before = torch.get_num_threads()
    try:
        readings(monkeypatch, [0.0, 0.0, 1.0, 1.0, 0.1])  # alone, then another job takes a core, then leaves
        monkeypatch.setattr(cpu_threads, "TORCH_THREADS", 2)
        assert cpu_threads.set_threads(0) == (2, "2 of %d cores idle at start" % len(os.sched_getaffinity(0)))
        governor = cpu_threads.ThreadGovernor(most=2, every=0.0)
        governor.check()  # the other job's core: down to one thread
        assert torch.get_num_threads() == 1
        governor.check()
        governor.check()  # it has gone: back to two
        assert torch.get_num_threads() == 2 and governor.changes == 2
        assert cpu_threads.set_threads(3) == (3, "--threads") and torch.get_num_threads() == 3
        with pytest.raises(UserError, match="--threads"):
            cpu_threads.set_threads(99999999999)
    finally:
        torch.set_num_threads(before)


def test_part_modules_with_common_names_are_the_repositorys() -> None:
    """Scripts run with their own folder first on sys.path (and the tests and notebooks put it first), so
    a module named like an installed package (evaluate, models, dataset) is always this repository's."""
    import dataset
    import evaluate
    import models

    root = Path(cs324_utils.__file__).resolve().parent
    for module, part in ((dataset, "part1"), (evaluate, "part2"), (models, "part2")):
        assert Path(module.__file__).resolve().parent == root / part, module.__file__


def test_malloc_keeps_freed_memory_where_glibc_runs() -> None:
    """my_gan.py asks glibc to keep freed blocks (no page faults for the tensors each step reallocates);
    elsewhere the call is a no-op that says so."""
    import platform
    import sys
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert gan_run.keep_freed_memory() == expected

"""export_run: a run folder reduced to what the notebooks need, generators in float16, written whole or not at all."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

import export_run as export_module
from cs324_utils import UserError
from export_run import export_run
from models import load_generator
from part2_fakes import make_run
from sampling import latents


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative name -> bytes), to prove a folder was left as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path]:
    """A run and an earlier export of it at tmp_path/out."""
    run = make_run(tmp_path / "run")
    export_run(run, tmp_path / "out", every=2)
    return run, tmp_path / "out"


def test_export_keeps_what_notebooks_need(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    written = export_run(run, tmp_path / "out", every=2)
    for name in ("config.json", "grid_start.png", "grid_half.png", "grid_end.png", "losses.csv",
                 "generator_start.pt", "generator_half.pt", "generator_end.pt"):
        assert (tmp_path / "out" / name).is_file() and name in written
    assert sorted(p.name for p in (tmp_path / "out" / "grids").iterdir()) == ["iter_0000000.png", "iter_0000200.png"]
    saved = torch.load(tmp_path / "out" / "generator_end.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in saved["state_dict"].values() if v.is_floating_point())
    z = latents(4, 16, seed=0)
    a, b = load_generator(run / "generator_end.pt")(z), load_generator(tmp_path / "out" / "generator_end.pt")(z)
    assert torch.allclose(a, b)  # the fake run is already float16, so the round trip is exact
    assert hidden_leftovers(tmp_path) == []


def test_export_refuses_unfinished_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a finished"):
        export_run(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_export_needs_overwrite(exported: tuple[Path, Path]) -> None:
    run, out = exported
    before = snapshot(out)
    with pytest.raises(UserError, match="--overwrite"):
        export_run(run, out)
    assert snapshot(out) == before


def test_overwrite_replaces_the_export_whole(exported: tuple[Path, Path]) -> None:
    run, out = exported
    (out / "interpolation_1_to_2.png").write_bytes(b"from an older run")
    (run / "grid_end.png").write_bytes(b"new grid")
    export_run(run, out, every=2, overwrite=True)
    assert not (out / "interpolation_1_to_2.png").exists()  # nothing of the old export mixes with the new
    assert (out / "grid_end.png").read_bytes() == b"new grid"
    assert hidden_leftovers(out.parent) == []


def test_failed_export_leaves_the_target_as_it_was(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """A second run whose half generator is corrupt: before, this wrote its config and grids over the old export."""
    _, out = exported
    before = snapshot(out)
    bad = make_run(tmp_path / "bad_run")
    (bad / "config.json").write_text('{"latent_dim": 16, "n_epochs": 99}\n')
    (bad / "generator_half.pt").write_bytes(b"truncated")
    with pytest.raises(UserError, match="corrupt"):
        export_run(bad, out, overwrite=True)
    assert snapshot(out) == before
    assert hidden_leftovers(tmp_path) == []


def test_disk_full_half_way_leaves_the_target_as_it_was(exported: tuple[Path, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run, out = exported
    before = snapshot(out)
    calls = []

    def copy_then_fill_disk(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        shutil.copy2(src, dst)

    monkeypatch.setattr(export_module.shutil, "copy2", copy_then_fill_disk)
    with pytest.raises(UserError, match="as it was"):
        export_run(run, out, every=2, overwrite=True)
    assert len(calls) == 4 and snapshot(out) == before
    assert hidden_leftovers(tmp_path) == []


def test_a_kill_between_the_renames_is_undone(exported: tuple[Path, Path], tmp_path: Path) -> None:
    """Killed after the old export was moved aside: the next export puts it back, then refuses without --overwrite."""
    run, out = exported
    before = snapshot(out)
    out.rename(tmp_path / ".out.old.999.tmp")
    (tmp_path / ".out.new.999.tmp").mkdir()  # the unfinished copy of the killed export
    with pytest.raises(UserError, match="--overwrite"):
        export_run(run, out)
    assert snapshot(out) == before
    assert hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("target", ["run", "run/sub", "."])
def test_export_refuses_overlapping_folders(tmp_path: Path, target: str) -> None:
    run = make_run(tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(UserError, match="overlap"):
        export_run(run, tmp_path / target, overwrite=True)
    assert snapshot(run) == before

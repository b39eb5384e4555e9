"""export_run: a run folder reduced to what the notebooks need, generators in float16."""
from pathlib import Path

import pytest
import torch

from cs324_utils import UserError
from export_run import export_run
from models import load_generator
from part2_fakes import make_run
from sampling import latents


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


def test_export_refuses_unfinished_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a finished"):
        export_run(tmp_path / "empty", tmp_path / "out")

"""Execute part2/task2.ipynb and task3.ipynb headless against a tiny run folder and classifier made here;
part2/figures.py, whose figures task2 shows, on its own."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from matplotlib.image import imread
from nbclient import NotebookClient

import figures
from evaluate import score_run
from part2_fakes import make_run_and_classifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_run_and_classifier(tmp_path_factory.mktemp("nb"))


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel (the kernel inherits this process's environment variables)."""
    nb = nbformat.read(ROOT / "part2" / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> tuple[int, list[str]]:
    """Number of image/png outputs, and the text of error outputs (nbclient raises on errors; this double-checks)."""
    pngs, errors = 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            pngs += "image/png" in out.get("data", {})
            if out.get("output_type") == "error":
                errors.append(out.get("ename", ""))
    return pngs, errors


@pytest.mark.slow
def test_task2_runs_from_any_folder(tiny_run: tuple[Path, Path], fake_mnist: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run, clf = tiny_run
    score_run(run, fake_mnist, clf, n_samples=100)  # so the scores cell takes its scores.json branch
    monkeypatch.setenv("PART2_DIR", str(ROOT / "part2"))
    monkeypatch.setenv("GAN_RUN_DIR", str(run))
    nb = execute("task2.ipynb", cwd=tmp_path)  # a folder outside the repository: PART2_DIR finds part2/
    pngs, errors = outputs(nb)
    assert errors == []
    assert pngs == 5  # saved grids, sampled grids, losses, class histograms, the committed stabiliser study
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "FID" in text and "real" in text


@pytest.mark.slow
def test_task3_finds_part2_by_walking_up(tiny_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    run, clf = tiny_run
    monkeypatch.delenv("PART2_DIR", raising=False)
    monkeypatch.setenv("GAN_RUN_DIR", str(run))
    monkeypatch.setenv("GAN_CLASSIFIER", str(clf))
    nb = execute("task3.ipynb", cwd=ROOT / "tests")  # inside the repository: the walk up finds part2/
    pngs, errors = outputs(nb)
    assert errors == []
    assert pngs == 2  # the random pair and the reader's pair (5 -> 3 exists for this tiny classifier)


def copy_grids(run: Path, to: Path) -> Path:
    to.mkdir()
    for name in ("grid_start.png", "grid_half.png", "grid_end.png", "losses.csv"):
        shutil.copy(run / name, to / name)
    return to


def test_figures_writes_grids_enlarged_pixel_for_pixel(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    run = copy_grids(tiny_run[0], tmp_path / "run")
    done = subprocess.run([sys.executable, str(ROOT / "part2" / "figures.py"), str(run)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)  # the script run from outside the repository
    assert done.returncode == 0, done.stderr
    png = imread(run / figures.FILE)[..., :3]
    grid = imread(run / "grid_end.png")[..., :3]
    scale, (h, w) = 3, grid.shape[:2]
    assert png.shape[1] == 3 * w * scale + 4 * figures.GAP
    x0, y0 = 3 * figures.GAP + 2 * w * scale, png.shape[0] - figures.GAP // 2 - h * scale
    panel = png[y0:y0 + h * scale, x0:x0 + w * scale]  # the end grid, the rightmost panel
    assert np.abs(panel[::scale, ::scale] - grid).max() < 1 / 255 + 1e-6
    assert np.abs(panel[scale - 1::scale, scale - 1::scale] - grid).max() < 1 / 255 + 1e-6


def test_figures_titles_say_the_iteration(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"n_epochs": 200, "iterations_per_epoch": 937,
                                                      "total_iterations": 187400, "half_iteration": 93700}))
    when = figures.stage_iterations(tmp_path)
    assert [figures.stage_title(s, when[s]) for s in ("start", "half", "end")] == [
        "start (iteration 0)", "halfway (iteration 93,700, epoch 100)", "end (iteration 187,400, epoch 200)"]
    (tmp_path / "config.json").write_text("{}")  # no schedule: the last row of losses.csv is the end
    (tmp_path / "losses.csv").write_text("iteration,epoch,loss_d,loss_g,d_real,d_fake\n50,1,1,1,1,1\n100,1,1,1,1,1\n")
    assert figures.stage_iterations(tmp_path) == {"start": (0, None), "half": (50, None), "end": (100, None)}
    (tmp_path / "losses.csv").unlink()
    assert figures.stage_title("half", figures.stage_iterations(tmp_path)["half"]) == "halfway"


def test_figures_refuses_to_replace_and_names_a_missing_grid(tiny_run: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    run = copy_grids(tiny_run[0], tmp_path / "run")
    (run / figures.FILE).write_bytes(b"earlier figure")
    with pytest.raises(SystemExit) as exc:
        figures.main([str(run)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--overwrite" in err
    assert (run / figures.FILE).read_bytes() == b"earlier figure"
    figures.main([str(run), "--overwrite"])
    assert (run / figures.FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (run / "grid_half.png").unlink()
    with pytest.raises(SystemExit) as exc:
        figures.main([str(run), "--out", str(tmp_path / "new.png")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "grid_half.png is missing" in err
    assert not (tmp_path / "new.png").exists()

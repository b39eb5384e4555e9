"""Execute part2/task2.ipynb and task3.ipynb headless against a tiny run folder and classifier made here."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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


def test_task2_runs_from_any_folder(tiny_run: tuple[Path, Path], fake_mnist: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run, clf = tiny_run
    score_run(run, fake_mnist, clf, n_samples=100)  # so the scores cell takes its scores.json branch
    monkeypatch.setenv("PART2_DIR", str(ROOT / "part2"))
    monkeypatch.setenv("GAN_RUN_DIR", str(run))
    nb = execute("task2.ipynb", cwd=tmp_path)  # a folder outside the repository: PART2_DIR finds part2/
    pngs, errors = outputs(nb)
    assert errors == []
    assert pngs >= 4  # saved grids, sampled grids, losses, class histogram
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "FID" in text and "real" in text


def test_task3_finds_part2_by_walking_up(tiny_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    run, clf = tiny_run
    monkeypatch.delenv("PART2_DIR", raising=False)
    monkeypatch.setenv("GAN_RUN_DIR", str(run))
    monkeypatch.setenv("GAN_CLASSIFIER", str(clf))
    nb = execute("task3.ipynb", cwd=ROOT / "tests")  # inside the repository: the walk up finds part2/
    pngs, errors = outputs(nb)
    assert errors == []
    assert pngs == 2  # the random pair and the reader's pair (5 -> 3 exists for this tiny classifier)

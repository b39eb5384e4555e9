"""Execute part1/part1.ipynb headless against tiny results made here."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from train import Config, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_part1_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    train(Config(input_length=5, data_size=600, batch_size=50, num_hidden=16, max_epoch=2,
                 out=str(results / "train_len20"), progress=False))
    sweep = subprocess.run([sys.executable, str(ROOT / "part1" / "compare.py"), "--lengths", "3", "--seeds", "0",
                            "--max_steps", "10", "--eval_every", "5", "--data_size", "100", "--num_hidden", "8", "--lstm_lengths",
                            "--out", str(results / "compare")], capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    assert (results / "compare" / "compare.png").is_file()
    shutil.rmtree(results / "compare" / "lstm_len3_seed0")  # the notebook needs only the summary files

    monkeypatch.setenv("PART1_RESULTS", str(results))
    monkeypatch.setenv("PART1_STEPS", "10")
    monkeypatch.delenv("PART1_DIR", raising=False)
    nb = nbformat.read(ROOT / "part1" / "part1.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "tests")}}).execute()  # finds part1/ walking up
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4  # curves, comparison, its curves, live
    text = "".join(o.get("text", "") for o in outputs)
    assert "final validation accuracy" in text and "lstm length 14" in text and "6 runs of at most 10 steps" in text

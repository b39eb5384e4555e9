"""The setup task2.ipynb and task3.ipynb share: imports, and their inputs from environment variables.

Each notebook's first cell puts part2/ and the repository root on the import path ($PART2_DIR, else the part2/
folder in the working folder or the nearest folder above it, so the notebooks run from anywhere inside
the repository) and imports this module. Inputs, with the committed results as defaults:

    GAN_RUN_DIR     a run folder written by my_gan.py (default part2/results/gan/)
    GAN_CLASSIFIER  the digit classifier's weights (default part2/results/classifier.pt)
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

from classifier import DEFAULT_CLASSIFIER
from cs324_utils import repo_relative as shown  # noqa: F401  paths as printed: repository-relative
from file_checks import read_json

PART2 = Path(__file__).resolve().parent
RUN_DIR = Path(os.environ.get("GAN_RUN_DIR", PART2 / "results" / "gan"))
CLASSIFIER = Path(os.environ.get("GAN_CLASSIFIER", DEFAULT_CLASSIFIER))
if not RUN_DIR.is_dir():
    raise FileNotFoundError(f"GAN_RUN_DIR {RUN_DIR} is not a folder; point it at a run folder of my_gan.py")


def describe_run(run_dir: Path = RUN_DIR) -> None:
    """Print the run folder, the command that trained it and its settings (from config.json when there is one)."""
    print("run folder:", shown(run_dir))
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        print("(no config.json)")
        return
    config = read_json(config_path, "config.json")  # a damaged one is one line naming it
    if config.raw("command", None) is not None:  # None: trained by a call of my_gan.train, not a command
        print("trained by:", config.str("command"))
    settings = [f"{k}={v}" for k, v in config.obj.items() if k not in ("command", "out", "data_dir")]
    for i in range(0, len(settings), 6):
        print("  " + ", ".join(settings[i:i + 6]))


def show(fig: Figure) -> None:
    """Display a Figure of figures.py (drawn without pyplot) as the PNG its command line would write."""
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    display(Image(data=buffer.getvalue()))

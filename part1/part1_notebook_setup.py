"""The setup part1.ipynb imports: the notebook's inputs from environment variables.

The notebook's first cell puts part1/ and the repository root on the import path ($PART1_DIR, else the
part1/ folder in the working folder or the nearest folder above it, so the notebook runs from
anywhere inside the repository) and imports this module. Inputs, with the committed results as defaults:

    PART1_RESULTS  a folder holding train_len20/ and compare/ (default part1/results/)
    PART1_STEPS    the step budget of each run of the live re-run (default 1500)
"""
from __future__ import annotations

import os
from pathlib import Path

from cs324_utils import repo_relative as shown  # noqa: F401  paths as printed: repository-relative

PART1 = Path(__file__).resolve().parent
DEFAULT_STEPS = 1500


def steps_from_env() -> int:
    """$PART1_STEPS as a positive integer (DEFAULT_STEPS when unset)."""
    value = os.environ.get("PART1_STEPS", str(DEFAULT_STEPS))
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"PART1_STEPS must be a positive integer, got {value!r}")
    return int(value)


RESULTS = Path(os.environ.get("PART1_RESULTS", PART1 / "results"))
STEPS = steps_from_env()


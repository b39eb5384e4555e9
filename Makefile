# One-command setup. `make demo` sets up .venv and runs a short job of each part;
# `make test` sets up .venv (with test packages) and runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= part2/data

.PHONY: demo test venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# The demo runs have folders of their own, which each `make demo` starts afresh (--overwrite).
demo: venv
	$(PY) part1/train.py --input_length 20 --out part1/runs/demo --overwrite
	$(PY) part2/my_gan.py --n_epochs 1 --data_dir $(DATA_DIR) --out part2/runs/demo --overwrite

# One thread: the tests train tiny models, and on a busy machine OpenMP threads spin-waiting
# for a descheduled partner can make a step ten times slower.
test: venv
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

clean:
	rm -rf part1/runs part2/runs .pytest_cache

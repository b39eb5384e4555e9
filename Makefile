# One-command setup. `make demo` sets up .venv and runs a short job of each part;
# `make test` sets up .venv (with test packages) and runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= part2/data

.PHONY: demo test test-slow venv clean results notebooks

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
# for a descheduled partner can make a step ten times slower. `make test` leaves out the slow
# end-to-end runs (pytest.ini); `make test-slow` runs only those. CI runs both.
test: venv
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

test-slow: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow tests

# Every committed result under part1/results and part2/results, re-made in order by make_results.py
# (about 14 hours on a 2-core CPU; the steps and their times are in part*/results/README.md).
# QUICK=1: the same chain with tiny settings into runs/results_quick, in a few minutes.
results: venv
	$(PY) make_results.py $(if $(QUICK),--quick)

clean:
	rm -rf part1/runs part2/runs runs/results_quick .pytest_cache

# Re-execute the three notebooks in place from the committed results, so that their outputs
# match the files they read (part 1's live cell retrains small models: about a minute).
notebooks: venv
	OMP_NUM_THREADS=1 $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.record_timing=False --ExecutePreprocessor.timeout=1800 \
		part1/part1.ipynb part2/task2.ipynb part2/task3.ipynb

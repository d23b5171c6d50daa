# Two commands on a fresh machine: `make train` (main job) and `make test` (the test suite).
# Both create .venv and install the project into it when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install train test tensorboard clean

install: $(VENV)/.installed

# torch and torchvision first, pinned to the releases the project is tested with (pyproject.toml has
# the ranges a user may install). setuptools: the build backend, which .ci/check_wheel and
# tests/test_packaging.py call in this venv (Python 3.12's venv has none; 70.1 builds wheels itself).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=70.1"
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet --config-settings editable_mode=compat -e ".[dev]"
	touch $@

train: install  ## make train ARGS="loss=minimax trainer.max_epochs=10"
	$(PY) train.py $(ARGS)

# -n auto: one pytest-xdist worker per core. loadgroup hands out the tests one at a time (plain
# `--dist load` pre-assigns long runs of them and left one worker idle for a minute) and keeps each
# xdist_group in one worker, except under pytest 9.2, where it cannot (pytest-xdist#1386): no test
# depends on it. `python -m pytest -q` runs the same tests in one process.
test: install
	$(PY) -m pytest -q -n auto --dist loadgroup

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

clean:
	rm -rf $(VENV) .pytest_cache

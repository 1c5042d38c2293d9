# Two commands do everything: `make train` (the main job) and `make test`.
# Each creates (or reuses) the virtual environment in .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup train test lint format clean-data evaluate-models

# The project itself is installed editable (no dependencies: the pinned requirements are
# installed first), so every script imports the repository's modules from any working
# directory without a sys.path edit; "compat" mode puts the repository root on the path,
# so a new top-level module needs no reinstall.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e . --config-settings editable_mode=compat
	touch $@

setup: $(VENV)/.installed

## Main job: simulate (once), train, evaluate on the test split, print the TrackML score.
train: setup
	$(PY) training.py $(ARGS)

## Default test selection (CPU, no slow tests; gpu/requiresdata tests skip when unavailable).
test: setup
	$(PY) -m pytest -m "not slow" $(ARGS)

## Score every shipped model (models/) on its 2,000-event test set; writes models/results.md.
evaluate-models: setup
	$(PY) -m evaluation.shipped_models --out models/results.md $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-data:
	rm -rf data runs

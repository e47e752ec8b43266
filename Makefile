# Every target sets itself up: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint crds bench ci

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs the project with the test and lint tools; re-runs when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## run: the whole control plane on this machine (emulated Kubernetes API + operator + REST facade)
run: $(VENV)/.installed
	$(BIN)/gpufleet dev $(ARGS)

## test: unit tests and integration tests against the emulated Kubernetes API (pytest)
test: $(VENV)/.installed
	$(BIN)/pytest $(PYTEST_ARGS)

## lint: ruff, mypy --strict, and the generated CRDs in sync with the models
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/gpufleet crds --output-dir crds --output-dir charts/gpufleet/crds
	git diff --exit-code -- crds charts/gpufleet/crds

## crds: regenerate crds/ and the chart's copy from the API models
crds: $(VENV)/.installed
	$(BIN)/gpufleet crds --output-dir crds --output-dir charts/gpufleet/crds

## bench: every benchmark, each printing a table
bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks

## ci: what .ci/run does
ci: lint test

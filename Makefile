# Every target sets itself up: a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint crds bench ci

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs the project, the emulated API (emulator/) and the test and lint tools (the `dev`
# dependency group); re-runs when either pyproject.toml changes.
$(VENV)/.installed: pyproject.toml emulator/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[agent]' -e ./emulator --group dev
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

## bench: every benchmark, each printing a table (ARGS="facade" runs benchmarks/facade.py only)
bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks $(ARGS)

## ci: what .ci/run does
ci: lint test

# ----- shipping: images, chart checks, end-to-end on kind ---------------------------------------
DOCKER ?= docker
IMAGE ?= gpufleet
AGENT_IMAGE ?= gpufleet-agent
IMAGE_TAG ?= dev

.PHONY: images chart-check e2e

## images: build the control-plane image (operator + facade) and the agent image with $(DOCKER)
images:
	$(DOCKER) build -f operator/Dockerfile -t $(IMAGE):$(IMAGE_TAG) .
	$(DOCKER) build -f agent-daemonset/Dockerfile -t $(AGENT_IMAGE):$(IMAGE_TAG) .

## chart-check: helm lint --strict and renders of charts/gpufleet validated against Kubernetes, RBAC and CRD checks
chart-check: $(VENV)/.installed
	$(BIN)/pytest -q tests/chart

## e2e: kind cluster + images + helm install + integration tests + teardown (skips without docker, kind, helm, kubectl)
e2e: $(VENV)/.installed
	tests/e2e/run.sh

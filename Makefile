# Lamina's entry points.  The README names two of them: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_NAMESPACE ?= lamina-demo

.PHONY: help setup venv run run-local test lint unit api crds bench clean

help:
	@echo "make setup  - install and build everything the suite and the cluster need (e2e/setup)"
	@echo "make run    - a local cluster with Lamina installed by its Helm chart, and the samples"
	@echo "make test   - set-up, lint + the whole test suite (unit and API tier; starts what it needs)"
	@echo "make unit   - unit tests only (seconds, no cluster)"
	@echo "make api    - API-server tier only (real etcd + kube-apiserver + controller-manager)"
	@echo "make lint   - ruff, mypy --strict, import-linter, CRD drift"
	@echo "make crds   - regenerate crds/ from the pydantic models"

# Set-up happens before anything is timed: packages, Go builds, offline images, the wheelhouse
# and the venv (idempotent; a warm run takes seconds).  No test timeout ever covers a build.
setup:
	e2e/setup

# Only the venv (e2e/setup's step): for the targets that need nothing else.
venv:
	e2e/setup venv

# The local cluster with Lamina deployed as users deploy it (e2e/run: image built in the
# cluster from the Dockerfile, `helm install`, the samples in $(DEMO_NAMESPACE)).
run: setup
	DEMO_NAMESPACE=$(DEMO_NAMESPACE) e2e/run

# Development: the operator on this host against the cluster `make run` started (its
# namespace must exist: `lamina operator` checks and says what is missing).
run-local: venv
	eval "$$(e2e/cluster env)" && exec $(BIN)/lamina operator --verbose

lint: venv
	$(BIN)/ruff check operator tests e2e/harness e2e/cluster
	$(BIN)/ruff format --check operator tests e2e/harness e2e/cluster
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/lamina crds --check crds/
	$(BIN)/lamina crds --check charts/lamina/crds/

unit: venv
	$(BIN)/pytest tests/unit -q

api: setup
	$(BIN)/pytest -m api -q

test: setup
	$(MAKE) lint
	$(BIN)/pytest -q

crds: venv
	$(BIN)/lamina crds --write crds/
	$(BIN)/lamina crds --write charts/lamina/crds/

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The node tier (a real single-node cluster: kubelet, containerd, CNI, kube-proxy, a local
# registry), with the operator installed by the Helm chart.
.PHONY: e2e
e2e: setup
	$(BIN)/pytest -m e2e -q tests/e2e

# Appended for the commit path (issue 4).
.PHONY: integration bench-commit

integration: venv
	$(BIN)/pytest -m integration -q tests/integration

bench-commit: venv
	source e2e/lib/packages.sh && ensure_packages docker-registry skopeo umoci curl
	e2e/registry up
	$(BIN)/python bench/commit.py

# Appended for issue 10: the operator started on N synced Images and ~4N Layers (API tier).
.PHONY: bench-scale
BENCH_SCALE_SIZES ?= 500,1000,2000,5000

bench-scale: venv
	$(BIN)/python bench/scale.py --sizes $(BENCH_SCALE_SIZES)

# Appended for issue 10: one root and 100 descendants (depth 3) on the node tier, Rebase and
# Rebuild cascades timed from watch streams (bench/cascade.py; e.g.
# BENCH_CASCADE_ARGS="--fanout 2,3,2" for 20, "--cache-tag lamina-buildcache" for the cache).
.PHONY: bench-cascade
BENCH_CASCADE_ARGS ?=

bench-cascade: setup
	$(BIN)/python bench/cascade.py $(BENCH_CASCADE_ARGS)

# Lamina's entry points.  The README names two of them: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_NAMESPACE ?= lamina-demo

.PHONY: help venv run test lint unit api crds bench clean

help:
	@echo "make run    - start a local cluster, install the CRDs and samples, run the operator"
	@echo "make test   - lint + the whole test suite (unit and API tier; starts what it needs)"
	@echo "make unit   - unit tests only (seconds, no cluster)"
	@echo "make api    - API-server tier only (real etcd + kube-apiserver + controller-manager)"
	@echo "make lint   - ruff, mypy --strict, import-linter, CRD drift"
	@echo "make crds   - regenerate crds/ from the pydantic models"

# The venv is rebuilt when pyproject.toml changes; pip's own cache makes that fast.
$(BIN)/lamina: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/lamina

run: venv
	e2e/cluster up
	e2e/cluster kubectl apply -f crds/
	e2e/cluster kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=lamina
	e2e/cluster kubectl create namespace $(DEMO_NAMESPACE) --dry-run=client -o yaml | e2e/cluster kubectl apply -f -
	e2e/cluster kubectl apply -n $(DEMO_NAMESPACE) -f examples/
	@echo
	@echo "Lamina is starting. In another shell:"
	@echo "  eval \"\$$(e2e/cluster env)\"; kubectl get lamina -n $(DEMO_NAMESPACE)"
	@echo "Stop with Ctrl-C; tear the cluster down with: e2e/cluster down"
	eval "$$(e2e/cluster env)" && exec $(BIN)/lamina operator

lint: venv
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/lamina crds --check crds/
	$(BIN)/lamina crds --check charts/lamina/crds/

unit: venv
	$(BIN)/pytest tests/unit -q

api: venv
	$(BIN)/pytest -m api -q

test: lint
	$(BIN)/pytest -q

crds: venv
	$(BIN)/lamina crds --write crds/
	$(BIN)/lamina crds --write charts/lamina/crds/

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# The node tier (a real single-node cluster: kubelet, containerd, CNI, kube-proxy, a local
# registry); `e2e/cluster up` on first use builds containerd, BuildKit, Helm and the images.
.PHONY: e2e
e2e: venv
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
BENCH_SCALE_SIZES ?= 500,1000,2000

bench-scale: venv
	$(BIN)/python bench/scale.py --sizes $(BENCH_SCALE_SIZES)

# One entry point for people and CI: `make demo` rehearses the bundled example,
# `make test` runs every check. Both install what they need and are safe to run twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup prometheus kube cluster lint test unit demo bench crds manifests clean

setup: $(STAMP) prometheus kube

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[serve,dev]'
	@touch $@

prometheus:
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The real control plane for the e2e tests (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm), built from the Go module proxy into
# ~/.cache/torchrollout once per pinned version (tests/kube_cluster/versions.py).
kube:
	$(PYTHON) -m tests.kube_cluster.build

# A local control plane for a person: Ctrl-C stops it and removes everything it made.
KUBE_KUBECONFIG ?= .work/kube.kubeconfig
cluster: $(STAMP) kube
	$(BIN)/python -m tests.kube_cluster --kubeconfig $(KUBE_KUBECONFIG)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

test: setup lint
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest -m "not prometheus and not torchserve and not emulator and not e2e and not kube"

# The figures of the README's Fleet scale and Serving throughput sections (tens of minutes;
# the test suite runs each benchmark only in its short smoke mode).
bench: setup
	$(BIN)/python bench/operator_scale.py
	$(BIN)/python bench/serving.py

crds: $(STAMP)
	$(BIN)/torchrollout crd > crds/torchrollout.io_modeldeployments.yaml
	$(BIN)/python -m tests.support.install_manifests

manifests: $(STAMP)
	$(BIN)/python -m tests.support.install_manifests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

demo: $(STAMP) prometheus
	@[ -f .work/models/accuracy.json ] || { echo "== training the example models into .work/models"; \
	  $(BIN)/python examples/models/make_models.py --output .work/models >/dev/null; }
	@mkdir -p .work/demo
	@status=0; for run in good:0 bad:1; do \
	  case=$${run%:*}; want=$${run#*:}; \
	  echo "== rehearse examples/rehearsal/$$case.yaml over examples/rehearsal/stable.yaml"; \
	  $(BIN)/torchrollout rehearse --stable examples/rehearsal/stable.yaml \
	    --canary examples/rehearsal/$$case.yaml \
	    --traffic .work/models/sequence-classifier/traffic.jsonl \
	    --report .work/demo/$$case.json --plot .work/demo/$$case.png; \
	  code=$$?; echo "   exit code $$code (0 promoted, 1 rolled back; expected $$want)"; \
	  [ $$code = $$want ] || status=1; \
	done; echo "reports and timelines: .work/demo/{good,bad}.{json,png}"; exit $$status

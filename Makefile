# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
# Both are idempotent: the venv is reinstalled only when pyproject.toml changes (the stamp carries its hash),
# and the Kafka jars are fetched only when their cache directory is missing. `make test` also installs the deployment
# validators (promtool, kustomize, docker compose) into .tools/, once per version (deploy/tools/install.sh).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)
PYTEST_ARGS ?=

.PHONY: setup venv kafka-jars demo-model tools demo test deploy-check lint clean clean-tools

setup: venv kafka-jars

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade-strategy only-if-needed -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

kafka-jars: venv
	$(PY) -m streams.cli broker fetch

# The small model the demo and the tests serve, trained and quantized once into the cache (minutes when cold).
demo-model: venv
	$(PY) -m streams.cli demo-model

tools:
	bash deploy/tools/install.sh

demo: setup
	$(PY) -m streams.cli demo

test: setup tools demo-model
	$(PY) -m pytest $(PYTEST_ARGS)

# Only the deployment checks (compose, Kubernetes, Prometheus, Grafana, Dockerfiles).
deploy-check: setup tools
	$(PY) -m pytest tests/deploy $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Separate from clean: rebuilding the tools takes minutes.
clean-tools:
	rm -rf .tools

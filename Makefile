# The two set-up commands of the README: `make run` and `make test`. Both install what they need
# (a venv with pinned Python packages, Debian packages, jars from Maven Central) and are safe to rerun.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-faults test-fuzz test-deps stop status lint install lock clean metrics

run: install
	$(BIN)/tally up

stop: install
	$(BIN)/tally down

status: install
	@$(BIN)/tally status

test: install test-deps
	$(BIN)/pytest $(PYTEST_ARGS)

# The named metrics of dbt_project/ checked (dbt parse, MetricFlow, what Tally can compute) and handed to
# the API, which serves them within seconds (dbt_project/README.md).
metrics: install
	$(BIN)/tally metrics

# Fault runs (PostgreSQL and Cassandra outages, broker restart): minutes each, so not part of `make test`.
test-faults: install
	$(BIN)/pytest -m faults -s tests/faults $(PYTEST_ARGS)

# The contract fuzz at 500 examples per operation (make test runs a few dozen): minutes, so opt-in.
test-fuzz: install
	TALLY_FUZZ_EXAMPLES=$${TALLY_FUZZ_EXAMPLES:-500} $(BIN)/pytest -m fuzz tests/e2e/test_contract_fuzz.py $(PYTEST_ARGS)

# The UI test drives Debian's Chromium with playwright-core (npm; it downloads no browser).
test-deps:
	@command -v chromium >/dev/null || { echo "installing Chromium (Debian package) for the UI test"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	@test -d tests/ui/node_modules/playwright-core || (cd tests/ui && npm ci --no-audit --no-fund)

lint: install
	$(BIN)/ruff check tally dataflows orchestration expectations benchmarks tests

install: $(STAMP)

# uv installs the locked set in seconds where pip takes minutes; it comes from PyPI like everything else.
$(STAMP): pyproject.toml requirements.lock
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "installing Java 17 and Maven (Debian packages)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless maven; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python -q -c requirements.lock -e '.[dev]'
	@touch $@

# Re-pin after changing pyproject.toml's dependencies (never automatic: CI must install what was tested).
lock:
	@test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install -q uv==0.13.9; }
	$(BIN)/uv pip compile -q --python-version 3.11 --extra dev pyproject.toml -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

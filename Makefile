# kasp: every target works on a fresh clone; `install` is the only set-up step.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install start test coverage coverage-html lint format doc clean graphviz chromium bench bench-stores bench-peers peers-venv wrk

APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve on HOST:PORT (default 0.0.0.0:8080) with the environment's configuration.
start: install
	$(BIN)/sanic service.app:create_app --factory --single-process --no-motd

test: install graphviz chromium
	$(BIN)/pytest

coverage: install graphviz chromium
	$(BIN)/pytest --cov --cov-report=term-missing --cov-report=html

coverage-html: coverage
	cp coverage/index.html coverage/coverage.html
	@echo "HTML report: coverage/coverage.html"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain service

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

doc: install graphviz
	$(BIN)/python -m service.docgen docs/DOCUMENTATION.md

## Debian packages for the state diagram (dot + the font its layout is measured in) and
## the browser tests; apt-installed when missing (CI runs as root on a fresh machine).
graphviz:
	@command -v dot >/dev/null && fc-list : family | grep -qx "DejaVu Sans" || ($(APT_INSTALL) graphviz fonts-dejavu-core)

chromium:
	@test -x /usr/bin/chromium || ($(APT_INSTALL) chromium)

## /enqueue requests/s and end-to-end jobs/s for each store (PostgreSQL: one and two instances),
## then the durable stores' size on disk under retention (bench/retention.py).
bench-stores: install wrk
	bash .ci/start-postgres
	$(BIN)/python bench/stores.py
	$(BIN)/python bench/retention.py

## The load generator of bench/stores.py, apt-installed when missing.
wrk:
	@command -v wrk >/dev/null || ($(APT_INSTALL) wrk)

## pgqueuer and procrastinate, pinned, in their own virtualenv (never in .venv or pyproject's deps).
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp

$(PEERS_STAMP): bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers/requirements.txt
	touch $(PEERS_STAMP)

peers-venv: $(PEERS_STAMP)

## kasp beside pgqueuer and procrastinate: a no-op burn-down of BENCH_PEERS_JOBS (50,000) jobs each,
## on the same PostgreSQL, alternating, with and without ANALYZE (bench/peers/run.py, bench/README.md).
bench-peers: install peers-venv
	bash .ci/start-postgres
	BENCH_PEERS_PYTHON=$(PEERS_VENV)/bin/python $(BIN)/python bench/peers/run.py

clean:
	rm -rf $(VENV) $(PEERS_VENV) coverage .coverage .pytest_cache .mypy_cache .ruff_cache

## Benchmarks print figures, never pass/fail, and are not part of `test`.
## `bench`: kasp against its baselines (bench/run.py, wrk installed from Debian when
## missing; sizes via BENCH_* variables, see bench/README.md), then every store
## (bench/stores.py), then the event-stream fan-out (bench/stream_fanout.py), then the
## cost of 10 open dashboards to the engine (bench/dashboards.py), then /healthz and
## /enqueue under 2,000 slowloris connections (bench/slowloris.py).
bench: install
	$(BIN)/python -m bench.run
	bash .ci/start-postgres
	$(BIN)/python bench/stores.py
	$(BIN)/python bench/retention.py
	$(BIN)/python bench/stream_fanout.py
	$(BIN)/python bench/dashboards.py
	$(BIN)/python bench/slowloris.py

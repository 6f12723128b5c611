# kasp: every target works on a fresh clone; `install` is the only set-up step.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install start test coverage coverage-html lint format doc bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve on HOST:PORT (default 0.0.0.0:8080) with the environment's configuration.
start: install
	$(BIN)/sanic service.app:create_app --factory --single-process --no-motd

test: install
	$(BIN)/pytest

coverage: install
	$(BIN)/pytest --cov --cov-report=term-missing --cov-report=html

coverage-html: coverage
	@echo "HTML report: coverage/index.html (also coverage/coverage.html)"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

doc: install
	$(BIN)/python -m service.docgen docs/DOCUMENTATION.md

## kasp against its baselines in one run (wrk installed from Debian if missing);
## never part of `test`. Sizes: BENCH_* variables, see bench/README.md.
bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) coverage .coverage .pytest_cache .mypy_cache .ruff_cache

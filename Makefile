# Two commands for a new machine: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test lint typecheck check bench faults soak install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

## run: the whole system on http://127.0.0.1:8000 until Ctrl-C
run: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py run_stack

## test: the whole suite, on SQLite and (when reachable) PostgreSQL, against a real Redis
test: install-dev
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy .
	$(BIN)/lint-imports
	bash scripts/test.sh

lint: install-dev
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

typecheck: install-dev
	$(BIN)/python -m mypy .

## bench: throughput and latency table (see docs/benchmarks.md)
bench: install-dev
	$(BIN)/python -m bench

## faults: the fault suite against a private stack of its own, one table (see docs/reliability.md)
faults: install-dev
	$(BIN)/python -m faults

## soak: the soak alone, random kills under load for MINUTES minutes (default 10)
MINUTES ?= 10
soak: install-dev
	$(BIN)/python -m faults --soak $(MINUTES)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Two commands for a fresh machine: `make run` opens the app, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip

.PHONY: run test install install-dev lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/samplemind-gen

lint: install-dev
	$(BIN)/ruff check samplemind_gen tests benchmarks
	$(BIN)/ruff format --check samplemind_gen tests benchmarks

typecheck: install-dev
	$(BIN)/mypy samplemind_gen

pytest: install-dev
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -p no:cacheprovider

test: lint typecheck pytest

bench: install-dev
	$(BIN)/python benchmarks/bench_musicgen.py

clean:
	rm -rf $(VENV) build *.egg-info

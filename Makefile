# Quick start targets (see README.md). Each creates .venv itself on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-test bench test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'

bench: install
	$(BIN)/gslbench bench

test: install-test
	$(BIN)/ruff check gslbench tests benchmarks
	$(BIN)/pytest -q

lint: install-test
	$(BIN)/ruff check gslbench tests benchmarks

# Quick start targets (see README.md). Each creates .venv itself on a fresh machine.
# docs and docs-serve build and serve the documentation site (mkdocs.yml, docs/) from the test extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install install-test system-deps bench test lint docs docs-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'

# Debian packages the tests use (CI runs `make test` as root on Debian): the copy of Fashion-MNIST
# for the real-data test, and Chromium, which renders the HTML report in tests/test_html_report.py.
system-deps:
	@if [ ! -d $(FASHION_MNIST_DIR) ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	fi
	@if ! command -v chromium >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq chromium; \
	fi

bench: install
	$(BIN)/gslbench bench

test: install-test system-deps
	$(BIN)/ruff check gslbench tests benchmarks
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/pytest -q

docs: install-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: install-test
	$(BIN)/ruff check gslbench tests benchmarks

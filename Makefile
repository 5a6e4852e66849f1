# Quick start targets (see README.md). Each creates .venv itself on a fresh machine.
# docs and docs-serve build and serve the documentation site (mkdocs.yml, docs/) from the test extras.
PYTHON ?= python3
VENV := .venv
# pytest-xdist workers of `make test` and `make test-fast` (each test file on one worker, so that
# a module's fixtures are built once)
TEST_JOBS ?= 2
BIN := $(VENV)/bin

FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install install-test system-deps bench test test-fast lint docs docs-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'

# Debian packages the tests use (CI runs `make test` as root on Debian): the copy of Fashion-MNIST
# for the real-data test, and Chromium, which renders the HTML report in tests/test_html_report.py.
# apt-get runs only for a package that is missing and only as root; elsewhere the tests that need
# it skip with a reason that says how to install it.
system-deps:
	@missing=""; \
	[ -d $(FASHION_MNIST_DIR) ] || missing=" dataset-fashion-mnist"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "system-deps: not root, so not installing$$missing (their tests skip;" \
		     "as root: apt-get install$$missing)"; \
		exit 0; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq $$missing

bench: install
	$(BIN)/gslbench bench

test: install-test system-deps
	$(BIN)/ruff check gslbench tests benchmarks
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile

# The inner loop: ruff and the tests not marked slow (no training-heavy integration tests, no
# apt-get, no docs build). `make test` is the full suite CI runs.
test-fast: install-test
	$(BIN)/ruff check gslbench tests benchmarks
	$(BIN)/pytest -q -m "not slow" -n $(TEST_JOBS) --dist loadfile

docs: install-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

lint: install-test
	$(BIN)/ruff check gslbench tests benchmarks

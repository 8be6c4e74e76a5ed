# Two commands on a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv by this file; system tools with apt-get when missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SPEC ?= $(firstword $(wildcard pipelines/detection.yaml) $(wildcard pipelines/classification.yaml) pipelines/cnn_classifier.yaml)

.PHONY: install demo test test-fast bench system-deps browser-deps clean

install: $(STAMP) system-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Graphviz `dot` renders SVG/PNG/PDF; Chromium drives the browser tests of the HTML page.
system-deps:
	@command -v dot >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "Graphviz 'dot' is missing: install it with your package manager (apt install graphviz, brew install graphviz)"; exit 1; }; \
	  echo "installing graphviz with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq graphviz >/dev/null; }

browser-deps:
	@command -v chromium >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "Chromium is missing: install it with your package manager (apt install chromium)"; exit 1; }; \
	  echo "installing chromium with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(VENV)/bin/composer build $(DEMO_SPEC)

# the suite runs on TEST_WORKERS processes (pytest-xdist); the slowest tests are single-threaded exports
TEST_WORKERS ?= 2

test: install browser-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=30

test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow and not browser"

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build .pytest_cache

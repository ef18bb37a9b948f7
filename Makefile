# Two entry points (see README): `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stream demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check stream_langchain stream_llamaindex relay hpc_functions tests cookbook benchmarks scripts
	$(PY) -m mypy stream_langchain stream_llamaindex relay hpc_functions

bench: $(STAMP)
	$(PY) -m benchmarks
	$(PY) -m benchmarks.report

# CI-sized run of every benchmark (a few minutes), results in a temp dir, never over the
# committed ones; then the README's Measured block must match the committed results files.
bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick
	$(PY) -m benchmarks.report --check

clean:
	rm -rf $(VENV) build *.egg-info

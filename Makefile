# Quick start: `make demo` and `make test` on a fresh machine; both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
DEMO   ?= runs/demo

.PHONY: install browser demo test bench clean

install: $(STAMP)

# torch first, pinned to the CPU wheel on disk; then the package, whose torch range it satisfies.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,browser,natural]'
	touch $@

# The gallery's browser tests drive Debian's chromium (never a downloaded browser). Without
# root or a package mirror the install fails and those tests skip with a message.
browser:
	@test -x /usr/bin/chromium || (export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
	  echo "make: could not install Debian's chromium; the browser tests will be skipped"

demo: $(STAMP)
	$(BIN)/featvis demo --out $(DEMO)

test: $(STAMP) browser
	$(BIN)/python -m pytest -rs

bench: $(STAMP)
	$(PIP) -e '.[bench]'
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache

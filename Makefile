# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export OMP_NUM_THREADS ?= 2
# a loaded machine can miss Prefect's default start-up deadline of its temporary server
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180

.PHONY: demo test test-slow bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel that lies on this disk (a bare `torch` pulls a CUDA build)
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# QUIET=1: no progress bars, only Prefect's warnings, then the summary (bars are drawn on a terminal only)
demo: $(STAMP)
	$(BIN)/python -m flows.demo $(if $(QUIET),--quiet)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# every benchmark in its short form; each ends with one JSON line (drop --quick for full size)
BENCHES := labels render pss train real chain sync faults gpu
bench: $(STAMP)
	for b in $(BENCHES); do $(BIN)/python bench/$$b.py --quick || exit 1; done
	$(BIN)/python bench/results.py

clean:
	rm -rf $(VENV) artifacts/* .prefect

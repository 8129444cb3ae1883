# Self-documenting: `make help` lists every target with its comment.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
UI_PORT ?= 5000
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv venv-test run serve promote test test-unit test-integration lint ui docs lock bench clean chromium java

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.runtime: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	@# setuptools prints an information block on every editable install of a flat layout: not ours to act on
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q --no-deps -e .
	@touch $@

$(BIN)/.test: requirements-test.lock pyproject.toml $(BIN)/.runtime
	$(BIN)/pip install -q -r requirements-test.lock
	@touch $@

venv: $(BIN)/.runtime ## Create the virtual environment from the lock file

venv-test: $(BIN)/.test ## The environment plus test dependencies

# PARAMS is split as a shell splits words (quote a value holding spaces) and never run by the
# shell: `;`, `$`, quotes and spaces reach mlflow run as written, each pair as one -P.
MLFLOW ?= $(BIN)/mlflow
run: venv ## Run the whole workflow on the embedded default; PARAMS="k=v 'k2=a b'" as -P k=v
	@MLOPS_MAKE_PARAMS='$(subst ','\'',$(value PARAMS))' $(BIN)/python -c 'import os, shlex, sys; \
	  sys.excepthook = lambda kind, exc, tb: print(f"error: PARAMS: {exc}", file=sys.stderr); \
	  pairs = shlex.split(os.environ.pop("MLOPS_MAKE_PARAMS")); \
	  bad = [p for p in pairs if "=" not in p]; \
	  bad and sys.exit(f"error: PARAMS: expected key=value, got {bad[0]!r}"); \
	  args = [a for p in pairs for a in ("-P", p)]; \
	  cmd = [sys.argv[1], "run", ".", "--env-manager", "local", "--experiment-name", "mlops-registry", *args]; \
	  print(shlex.join(cmd), flush=True); os.execv(cmd[0], cmd)' $(MLFLOW)

# serve and promote use the environment `make run` built (order-only: an edited pyproject.toml
# does not reinstall it on the way); ARGS passes any other flag, e.g. ARGS="--port 8080".
serve: | $(BIN)/.runtime ## Serve a registered model: make serve MODEL=NAME@ALIAS [ARGS="--port 8080"]
	@test -n "$(MODEL)" || { echo "error: name the model: make serve MODEL=NAME@ALIAS" >&2; exit 2; }
	@$(BIN)/python -m serving serve $(MODEL) $(ARGS)

promote: | $(BIN)/.runtime ## Promote a version: make promote MODEL=NAME/VERSION REASON="why" [ARGS="--to champion"]
	@test -n "$(MODEL)" -a -n "$(REASON)" || { echo "error: name the version and the reason: make promote MODEL=NAME/VERSION REASON=\"why\"" >&2; exit 2; }
	@$(BIN)/python -m registry promote $(MODEL) --reason "$(REASON)" $(ARGS)

chromium: ## Install Debian's chromium + chromium-driver for the UI test (needs root)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

java: ## Install Debian's Java runtime for the Spark tests (serving predict --engine spark; needs root)
	@command -v java >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null)

# The suite runs on two processes (pytest-xdist), each taking one test file at a time so a file's
# module-scoped servers start once. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: venv-test chromium java ## Run the whole test suite (unit + integration, real servers; two processes, TEST_WORKERS=0: one)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: venv-test ## Unit tests only
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv-test chromium java ## Integration tests only (real servers)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: venv-test ## ruff + import-linter layer contracts
	$(BIN)/ruff check .
	$(BIN)/lint-imports

ui: venv ## Open the embedded store in the MLflow UI (prints the runs-table address)
	$(BIN)/python -m tracking ui --port $(UI_PORT)

# Each script's short run (--quick: shorter loads, smaller stores); BENCH_FLAGS= runs full sizes.
BENCH_FLAGS ?= --quick

bench: venv-test ## Run every benchmark script (--quick; BENCH_FLAGS= for full sizes); fails at the end if any missed
	@failed=""; for b in benchmarks/bench_*.py; do echo "== $$b $(BENCH_FLAGS)"; \
	  $(BIN)/python $$b $(BENCH_FLAGS) || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "missed a goal or failed:$$failed"; exit 1; fi; \
	echo "every benchmark met its goals"

# The commands and settings reference pages are generated from the code's --help and
# conf/base.yaml first, so the site never drifts from them; --strict turns a broken link or
# anchor into a failure. (NO_MKDOCS_2_WARNING: Material prints a notice about its successor.)
docs: venv-test ## Build the documentation site into site/ (mkdocs build --strict)
	$(BIN)/python docs/gen_commands.py
	$(BIN)/python docs/gen_settings.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "docs built: site/index.html"

lock: ## Re-resolve the lock files from pyproject.toml
	$(BIN)/pip install -q pip-tools
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links pyproject.toml -o requirements.lock
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links --extra test --extra spark --extra docs pyproject.toml -o requirements-test.lock

clean: ## Remove the local store, artifacts and caches (keeps the venv)
	rm -rf mlflow.db mlruns mlartifacts .pytest_cache test-artifacts site

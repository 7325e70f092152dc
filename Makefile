# tuneloop: thin aliases over the commands a person or CI would type. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 3
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export GX_ANALYTICS_ENABLED ?= False

.DEFAULT_GOAL := help
.PHONY: help system-deps install run sweep validate up down status env deploy test test-drills test-slow test-gpu test-fast lint format bench bench-serving quality mlflow-ui clean

help: ## Show this list
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # first: the CPU build on disk, not the CUDA one
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

system-deps: ## Debian packages the e2e tests drive: chromium (UI form), docker-compose (infra check), postgresql
	@need=""; command -v chromium >/dev/null || need="$$need chromium"; \
	command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need="$$need postgresql"; \
	docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need="$$need docker-compose"; \
	if [ -n "$$need" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$need; \
	else echo "system packages present"; fi

install: $(STAMP) ## Create .venv with everything (torch 2.13.0 first)

run: $(STAMP) ## Run the pipeline on the bundled sample data
	$(BIN)/tuneloop run --config data/sample/config.yaml

sweep: $(STAMP) ## Run a small sweep on the bundled sample data
	$(BIN)/tuneloop sweep --config data/sample/config.yaml --trials-per-round 2 --max-rounds 2 --target-f1 0.99

validate: $(STAMP) ## Validate the bundled sample data only
	$(BIN)/tuneloop validate --config data/sample/config.yaml

up: $(STAMP) ## Start Prefect server, MLflow server and cpu/gpu workers on loopback (infra/stack.py)
	$(BIN)/python infra/stack.py up

down: $(STAMP) ## Stop exactly the processes `make up` started
	$(BIN)/python infra/stack.py down

status: $(STAMP) ## Show whether the processes `make up` started still run
	$(BIN)/python infra/stack.py status

env: $(STAMP) ## Print export lines for the running stack (use: eval "$$(make -s env)")
	@$(BIN)/python infra/stack.py env

deploy: $(STAMP) ## Register deployments/prefect.yaml with the running Prefect server
	$(BIN)/python infra/stack.py deploy

test: $(STAMP) ## Run the test suite (all but the slow real-data fine-tunes and the long drills) on TEST_WORKERS=3 workers
	$(BIN)/pytest -m "not slow and not drill" -n $(TEST_WORKERS) --dist loadgroup

test-drills: $(STAMP) ## Run only the long fault drills (kill -9 of trial processes, SIGKILL of a sweep, races; about 15 minutes)
	$(BIN)/pytest -m drill -n $(TEST_WORKERS) --dist loadgroup

test-slow: $(STAMP) ## Run only the slow tests (real fine-tunes on ../shared/data; about 20 minutes)
	$(BIN)/pytest -m slow -s

test-gpu: $(STAMP) ## Only the GPU tests (bf16/fp16, the sweep's GPU concurrency limit); on a CUDA machine
	$(BIN)/pytest -m gpu

test-fast: $(STAMP) ## Unit and data-contract tests only (seconds)
	$(BIN)/pytest tests/unit tests/data

lint: $(STAMP) ## Check the code with ruff and the type checker (mypy)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## Run the benchmarks and print their tables (minutes)
	$(BIN)/python benchmarks/validate_throughput.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/sweep_efficiency.py

bench-serving: $(STAMP) ## Serving latency of the registered champion: predict, pyfunc, mlflow models serve (after make run)
	$(BIN)/python benchmarks/serving.py

quality: $(STAMP) ## Quality benchmark: TF-IDF vs a plain PyTorch loop vs `tuneloop run` on real data (about 45 minutes)
	$(BIN)/python benchmarks/quality.py --datasets sample,sms,clinc-banking

mlflow-ui: $(STAMP) ## Open MLflow's UI on the store in use: the stack's server when `make up` runs, else .tuneloop/mlflow.db
	$(BIN)/python infra/stack.py mlflow-ui

clean: ## Remove run outputs (.tuneloop) and caches, keep .venv
	rm -rf .tuneloop .pytest_cache .ruff_cache

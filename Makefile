# tuneloop: thin aliases over the commands a person or CI would type. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export GX_ANALYTICS_ENABLED ?= False

.DEFAULT_GOAL := help
.PHONY: help install run validate test test-fast lint format bench clean

help: ## Show this list
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0  # first: the CPU build on disk, not the CUDA one
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv with everything (torch 2.13.0 first)

run: $(STAMP) ## Run the pipeline on the bundled sample data
	$(BIN)/tuneloop run --config data/sample/config.yaml

validate: $(STAMP) ## Validate the bundled sample data only
	$(BIN)/tuneloop validate --config data/sample/config.yaml

test: $(STAMP) ## Run the test suite (everything that runs on a CPU machine)
	$(BIN)/pytest

test-fast: $(STAMP) ## Unit and data-contract tests only (seconds)
	$(BIN)/pytest tests/unit tests/data

lint: $(STAMP) ## Check the code with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## Run the benchmarks and print their tables
	$(BIN)/python benchmarks/validate_throughput.py

clean: ## Remove run outputs (.tuneloop) and caches, keep .venv
	rm -rf .tuneloop .pytest_cache .ruff_cache

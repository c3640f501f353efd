SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One source of truth for the Beam version: the pin in pyproject.toml.
BEAM_VERSION := $(shell sed -n 's/.*"apache-beam\[gcp\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
PRISM_CACHE ?= $(HOME)/.cache/stream-ingest/prism
# The binary's name carries the patch level (= stream/launch/runners.py PRISM_BINARY_NAME).
PRISM := $(PRISM_CACHE)/v$(BEAM_VERSION)/prism-p1
export STREAM_PRISM_CACHE := $(PRISM_CACHE)
PYTEST_ARGS ?=
ARGS ?=

.PHONY: help venv prism run demo seed-demo deadletters chaos faultload test test-unit lint format emulators-up emulators-down bench clean

help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv and install the package with dev extras

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,bench,lookup]"
	$(BIN)/pip check
	@touch $(STAMP)

prism: ## Build Beam's Prism runner from the Go module proxy, patched (skipped, with a warning, without Go)
	@if [ -x "$(PRISM)" ]; then \
	  echo "prism: $(PRISM)"; \
	elif command -v go >/dev/null 2>&1; then \
	  echo "building prism v$(BEAM_VERSION) from the Go module proxy (once; 1-2 minutes)"; \
	  infra/local/build-prism.sh "$(BEAM_VERSION)" "$(PRISM)" \
	  || echo "warning: prism build failed; local runs fall back to the DirectRunner"; \
	else \
	  echo "warning: Go not found; local runs fall back to the DirectRunner (see README)"; \
	fi

run: venv prism ## Run the streaming pipeline on local emulators (started and stopped for you)
	$(BIN)/python -m stream.main --streaming $(ARGS)

demo: venv prism ## Pipeline + 5,000 mixed messages at 500/s + verify; exit code = verify's
	$(BIN)/python -m loadgen demo $(ARGS)

seed-demo: venv prism ## The seed's flow: request file -> replay -> pipeline -> verify -> HTTP lookups
	$(BIN)/python -m loadgen seed-demo $(ARGS)

# Two workers, a test file each at a time: each worker starts its own emulators (free ports).
TEST_WORKERS ?= 2

test: venv prism ## Every test tier: unit, pipeline, emulator, faults (starts/stops emulators)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: venv ## Only the fast tests (no emulators)
	$(BIN)/pytest -m "not emulator and not faults" $(PYTEST_ARGS)

lint: venv ## ruff (lint + format check) and mypy; never edits files
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

deadletters: venv ## Dead letters: summary, export, redrive (ARGS="summary"; see README)
	$(BIN)/python -m stream.deadletters $(ARGS)

emulators-up: venv ## Start both emulators in the background on 8085/8086
	$(BIN)/python -m stream.local up

emulators-down: venv ## Stop the emulators started by emulators-up
	$(BIN)/python -m stream.local down

chaos: venv prism ## A chaos soak: seeded faults and kills under traffic (ARGS="--minutes 20 --seed 7")
	$(BIN)/python -m loadgen chaos $(ARGS)

faultload: venv prism ## The bench's fault phase alone: throttling (5% RESOURCE_EXHAUSTED) and an outage
	$(BIN)/python -m loadgen.bench.faults $(ARGS)

bench: venv prism ## Throughput/latency of the pipeline beside the raw-client ceiling
	$(BIN)/python -m loadgen bench $(ARGS)

# Dataflow flex template: flex-build, flex-run, flex-update, flex-drain (see infra/dataflow).
include infra/dataflow/flex.mk
# The consent lookup HTTP function: lookup-serve, lookup-bundle, lookup-deploy (see infra/lookup).
include infra/lookup/lookup.mk

clean: ## Remove the venv and caches (not the Prism binary)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .run *.egg-info

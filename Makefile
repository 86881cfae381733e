# Two entry points for a fresh machine: `make serve` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TINY_DIR ?= var/tiny-models
CONFIG ?= configs/local.yaml
CLIENT_WHEELS := var/client-wheels
PYTEST_ARGS ?=

# Keep Ray and everything else on loopback: no usage stats, no cloud-metadata probes.
export RAY_USAGE_STATS_ENABLED := 0
export RAY_USAGE_STATS_REPORT_URL := http://127.0.0.1:9/usage
export HF_HUB_OFFLINE := 1
export VIDEOGEN_TINY_DIR := $(abspath $(TINY_DIR))

.PHONY: install tiny serve test lint format bench clean

$(STAMP): pyproject.toml constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0 -e '.[server,parallel,quant,bench,dev]'
	touch $(STAMP)

# The slim client's dependencies, for the test that installs it into a venv without the server's stack.
$(CLIENT_WHEELS)/.complete: $(STAMP)
	bash scripts/client-wheels.sh $(CLIENT_WHEELS)

install: $(STAMP) $(CLIENT_WHEELS)/.complete

tiny: install
	$(BIN)/videogen tiny-models --out $(TINY_DIR) --if-stale

serve: tiny
	$(BIN)/videogen serve --config $(CONFIG)

test: tiny
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: tiny
	$(BIN)/python -m bench.engine_overhead

clean:
	rm -rf $(VENV) var build *.egg-info

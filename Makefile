# The two commands in the README, and the steps they stand on. Each target does its own set-up
# on a fresh machine: Debian packages, the venv, the Kafka jars and the local stack.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export SLUICE_STATE_DIR ?= $(CURDIR)/.sluice

.PHONY: demo ui fuzz test test-unit lint typecheck check stack-up stack-down stack-status system-deps pipeline-tools clean

demo: stack-up
	$(BIN)/python examples/demo.py

# The console over what the demo left (the same state folder): http://127.0.0.1:8790, token printed.
ui: $(VENV)/.installed
	$(BIN)/sluice --repo examples/fraud ui $(UI_ARGS)

# The atheris fuzz target of event decoding, for FUZZ_SECONDS (CI runs it for 60), from the seed corpus;
# what it finds is written under $(SLUICE_STATE_DIR)/fuzz/ (see tests/fuzz/fuzz_decoding.py).
FUZZ_SECONDS ?= 300
fuzz: $(VENV)/.installed
	mkdir -p $(SLUICE_STATE_DIR)/fuzz/corpus
	for seed in tests/fuzz/corpus/*; do [ -e $(SLUICE_STATE_DIR)/fuzz/corpus/$${seed##*/} ] || cp $$seed $(SLUICE_STATE_DIR)/fuzz/corpus/; done
	$(BIN)/python tests/fuzz/fuzz_decoding.py $(SLUICE_STATE_DIR)/fuzz/corpus -dict=tests/fuzz/json.dict \
		-max_len=4096 -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(SLUICE_STATE_DIR)/fuzz/ -print_final_stats=1

test: stack-up pipeline-tools
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(VENV)/.installed
	$(BIN)/pytest -m "not stack" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

check: lint typecheck test

stack-up: system-deps $(VENV)/.installed
	$(BIN)/sluice stack up

stack-down: $(VENV)/.installed
	$(BIN)/sluice stack down

stack-status: $(VENV)/.installed
	$(BIN)/sluice stack status

system-deps:
	@bash deploy/local/install-system-deps.sh

# Metaflow and the Kubeflow Pipelines SDK pin packages sluice's set cannot take: each gets a venv of its
# own under $(SLUICE_STATE_DIR)/tools/, which its job backend calls (made again when its pins change).
pipeline-tools: $(VENV)/.installed
	$(BIN)/python -m sluice.tools metaflow kfp

$(VENV)/.installed: pyproject.toml deploy/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c deploy/constraints.txt -e '.[dev]'
	touch $@

clean: stack-down
	rm -rf $(VENV) .sluice .pytest_cache .mypy_cache .ruff_cache .hypothesis

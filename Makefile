# Chrysalis: `make demo` runs the main job, `make test` runs the whole suite. Both bootstrap via `make setup`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOLC_VERSION := 0.8.37
ANVIL_PKG := anvil-linux-$(if $(filter aarch64 arm64,$(shell uname -m)),arm64,amd64)

# Everything runs offline: no model hub, no remote RPC.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export SOLCX_BINARY_PATH := $(CURDIR)/.solcx
export CHRYSALIS_NODE_MODULES := $(CURDIR)/node_modules
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

CONTRACT_SOURCES := $(shell find contracts -name '*.sol' 2>/dev/null)

.PHONY: help setup demo test lint check-fresh bench clean chromium example-finetune

help:
	@echo "make setup   create .venv, install npm packages and the solc wrapper, compile contracts (idempotent)"
	@echo "make demo    run the demo on a local chain with the embedded IPFS node and shipped models"
	@echo "make test    run the lint, then the whole test suite"
	@echo "make lint    ruff (lint and format check), mypy over agent/ and oracles/, import-linter, slither against contracts/slither-triage.toml"
	@echo "make check-fresh  clone HEAD into a temporary folder with empty caches: setup, demo, a contract test"
	@echo "make bench   run the benchmarks and print their tables"
	@echo "make example-finetune  fine-tune the sprite and lore models on examples/finetune, evaluate, verify, pin them"

setup: $(VENV)/.installed node_modules/.installed $(VENV)/bin/anvil .solcx/solc-v$(SOLC_VERSION) .build/.compiled chromium

# The studio's browser tests drive Debian's chromium with playwright (no browser download). Installed only when
# missing and when running as root; otherwise say what to do (those tests then fail with the same message).
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && apt-get install -y -q chromium; \
	else echo "note: no Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium' for the studio's browser tests"; fi

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

node_modules/.installed: package.json
	npm install --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

# anvil from npm, with history pruned so it never leaks disk under ~/.foundry.
$(VENV)/bin/anvil: node_modules/.installed
	@printf '#!/bin/sh\nexec "%s" --prune-history 4096 "$$@"\n' "$(CURDIR)/node_modules/@foundry-rs/$(ANVIL_PKG)/bin/anvil" > $@
	@chmod +x $@

# ape-solidity / py-solc-x find compilers as $SOLCX_BINARY_PATH/solc-v<version>.
.solcx/solc-v$(SOLC_VERSION): scripts/toolchain/solc-wrapper.js node_modules/.installed
	@mkdir -p .solcx
	@printf '#!/bin/sh\nexec node "%s" "$$@"\n' "$(CURDIR)/scripts/toolchain/solc-wrapper.js" > $@
	@chmod +x $@

.build/.compiled: $(CONTRACT_SOURCES) ape-config.yaml $(VENV)/.installed .solcx/solc-v$(SOLC_VERSION)
	$(VENV)/bin/ape compile
	@touch $@

# At a terminal the demo ends with the studio serving until Ctrl-C; otherwise (or with SERVE=0) it prints its results
# and exits. SERVE=1 serves even without a terminal. agent.ops.supervise stops anything it started, whatever happens.
# MODEL=DIR draws the sprites with another sprite model (e.g. runs/finetune/neon from `make example-finetune`);
# LORE=DIR writes the lore with another causal LM (e.g. the lore fine-tune runs/finetune/lore).
SERVE ?=
MODEL ?=
demo: setup
	$(PY) -m agent.ops.supervise --free-port APE_FOUNDRY_HOST -- $(VENV)/bin/ape run demo --network ethereum:local:foundry \
		$(if $(filter 0 no false,$(SERVE)),--no-serve,$(if $(filter 1 yes true,$(SERVE)),--serve,)) \
		$(if $(MODEL),--image-model $(abspath $(MODEL))) $(if $(LORE),--lore-model $(abspath $(LORE)))

# Fine-tune the sprite model on the neon example art (canonical: CPU, float32, one thread, so
# `chrysalis model verify-training` reproduces it), evaluate it against the base (bench/results/finetune.md), check
# the receipt in a second process, and pin it to the embedded IPFS repo; then the same for a lore LoRA on the
# example lore (examples/finetune/lore, every 5th pair held out for the card). Register them on a chain with
# `chrysalis model publish DIR` (settings pointing at a deployment); draw and write with them:
# make demo MODEL=runs/finetune/neon LORE=runs/finetune/lore
FINETUNE_OUT ?= runs/finetune/neon
FINETUNE_LORE_OUT ?= runs/finetune/lore
example-finetune: $(VENV)/.installed
	$(VENV)/bin/chrysalis dataset add examples/finetune/neon
	@# resumes a killed run; a finished model is kept (delete $(FINETUNE_OUT) to train again)
	test -f $(FINETUNE_OUT)/manifest.json || \
		$(VENV)/bin/chrysalis model train --dataset examples/finetune/neon --out $(FINETUNE_OUT) --steps 1500 \
			--palettes neon
	$(PY) -m bench.finetune --model $(FINETUNE_OUT)
	$(VENV)/bin/chrysalis model verify-training $(FINETUNE_OUT)/training-receipt.json --dataset examples/finetune/neon
	$(VENV)/bin/chrysalis model publish $(FINETUNE_OUT) --no-register
	$(VENV)/bin/chrysalis dataset add examples/finetune/lore
	test -f $(FINETUNE_LORE_OUT)/manifest.json || \
		$(VENV)/bin/chrysalis model train --dataset examples/finetune/lore --out $(FINETUNE_LORE_OUT) --holdout-every 5
	$(VENV)/bin/chrysalis model verify-training $(FINETUNE_LORE_OUT) --dataset examples/finetune/lore
	$(VENV)/bin/chrysalis model publish $(FINETUNE_LORE_OUT) --no-register

test: setup
	@$(MAKE) --no-print-directory lint
	./scripts/test.sh

lint: $(VENV)/.installed node_modules/.installed .solcx/solc-v$(SOLC_VERSION)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) scripts/package_graph.py >/dev/null || $(PY) scripts/package_graph.py
	$(PY) scripts/slither_check.py

# What a new user gets: a clone of HEAD in a new folder, with empty home-level caches (scripts/check_fresh.sh).
check-fresh:
	./scripts/check_fresh.sh

bench: setup
	$(PY) -m bench

clean:
	rm -rf .build .solcx .cache .pytest_cache .hypothesis

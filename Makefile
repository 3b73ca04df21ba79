# Seq2seq chatbot: train, archive and serve with TorchServe.
# `make help` lists the targets. Variables can be overridden: `make mar CKPT=runs/x/4000_checkpoint.tar`.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- setup
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed ## Create .venv and install pinned dependencies

test: install ## Run the test suite (starts and stops its own TorchServe)
	$(PY) -m pytest -q tests

.PHONY: help install test

# ---------------------------------------------------------------- data and training

# ---------------------------------------------------------------- serving


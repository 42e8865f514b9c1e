# The two quick-start commands: `make dev` (Dagster UI on 127.0.0.1:3000) and `make test`.
# Both create .venv from requirements.lock first; nothing else needs to be installed.
SHELL := /bin/bash
VENV := .venv
export DAGSTER_HOME := $(CURDIR)/.dagster
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: dev test check lock bootstrap

bootstrap:
	@bash scripts/bootstrap.sh

dev: bootstrap
	dg dev --host 127.0.0.1 --port 3000

test: bootstrap
	python -m pytest $(PYTEST_ARGS)

check: bootstrap
	dg check defs

# CPU torch wheels: a local folder where the machine has one, else PyTorch's CPU index.
TORCH_WHEELS ?= $(shell test -d /opt/wheels && echo /opt/wheels || echo https://download.pytorch.org/whl/cpu/torch)

# Regenerate requirements.lock after changing dependencies in pyproject.toml.
LOCK_FLAGS = --quiet --universal --python-version 3.11 -c constraints/torch-cpu.txt \
  --find-links $(TORCH_WHEELS) --no-emit-package torchvision
lock: bootstrap
	uv pip compile $(LOCK_FLAGS) --all-extras pyproject.toml -o requirements.lock
	@# The template repository also ships the lock of projects made without the docling extra.
	if [ -f copier.yml ]; then uv pip compile $(LOCK_FLAGS) --extra dev pyproject.toml -o requirements-core.lock; fi

# The two commands of the README: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: run test setup host venv lint typecheck unit integration bench clean

run: setup
	$(VENV)/bin/cloudlet server

test: setup lint typecheck unit integration

setup: host venv

host:
	bash scripts/setup-host

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check cloudlet tests bench
	$(VENV)/bin/ruff format --check cloudlet tests bench

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit -q -n 2

# Integration tests need the real daemons: a skip here would hide a broken host, so it is an error.
# Each module runs whole on one worker (loadscope): its tests share one server and one booted
# guest, in order, and the two workers split the modules.
integration: venv
	CLOUDLET_REQUIRE_REAL=1 $(VENV)/bin/pytest tests/integration -q -n 2 --dist loadscope

bench: setup
	$(PY) bench/vm_lifecycle.py
	$(PY) bench/container_lifecycle.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

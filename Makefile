# The two commands of the README: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed
# The dashboard: Node packages from the lock file, built into the Python package when a source changes.
NODE_STAMP := web/node_modules/.installed
DASHBOARD := cloudlet/dashboard/index.html
WEB_SRC := $(shell find web/src web/scripts web/public -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json

.PHONY: run test setup host venv web lint weblint typecheck unit integration bench clean

run: setup
	$(VENV)/bin/cloudlet server

test: setup lint weblint typecheck unit integration

setup: host venv web

host:
	bash scripts/setup-host

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

web: $(DASHBOARD)

$(NODE_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

$(DASHBOARD): $(NODE_STAMP) $(WEB_SRC)
	cd web && npm run build

weblint: $(NODE_STAMP)
	cd web && npm run lint && npm run typecheck

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache web/node_modules cloudlet/dashboard

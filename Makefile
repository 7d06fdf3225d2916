# Voltwatch: `make run` starts the demo site, `make test` runs the whole suite.
# Everything third-party comes from PyPI, Debian and npm at install time.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
# Test-only plugins (an example and a broken one) are installed beside, not into, the venv:
# tests put this folder on sys.path, so `make run` never loads them.
TEST_PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard tests/plugins/*/pyproject.toml))
TEST_PLUGIN_DIR := $(VENV)/test-plugins
TEST_STAMP := $(TEST_PLUGIN_DIR)/.installed
STAMP := $(VENV)/.installed
WEB_STAMP := web/node_modules/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Most tests wait on brokers, databases, subprocesses and a
# browser, so two processes on a 2-core machine finish in about 60 % of the serial time; every
# fixture starts its own Mosquitto on a free port and its own database, so they do not collide.
# `make test PYTEST_WORKERS=0` runs serially.
PYTEST_WORKERS ?= 2

.PHONY: install run test bench lint system-deps services clean screenshots

install: $(STAMP) $(WEB_STAMP)

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[test]' $(addprefix -e ,$(PLUGINS))
	touch $@

$(TEST_STAMP): $(STAMP) $(shell find tests/plugins -name '*.py' -o -name pyproject.toml 2>/dev/null)
	rm -rf $(TEST_PLUGIN_DIR)
	$(PIP) install -q --disable-pip-version-check --no-deps --target $(TEST_PLUGIN_DIR) $(TEST_PLUGINS)
	touch $@

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(VENV)/bin/voltwatch demo

# System packages the tests talk to for real (Mosquitto, PostgreSQL, Chromium).
system-deps:
	@bash scripts/system-deps.sh

# Run a second time with every Hub fixture on PostgreSQL (tests/storage already runs each of
# its tests on both backends); `make test PG_SUITES="tests/alarms tests/http"` changes the set.
PG_SUITES ?= tests/alarms tests/hazards tests/http/test_http_history.py

test: install $(TEST_STAMP) system-deps
	$(VENV)/bin/ruff check hub plugins tests bench
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	VOLTWATCH_TEST_DB=postgresql $(PY) -m pytest -q -n $(PYTEST_WORKERS) $(PG_SUITES)

bench: install
	$(PY) bench/run.py

# Each main page of the web UI as the demo shows it, to docs/screenshots/*.png (README shows them).
screenshots: install system-deps
	$(PY) scripts/screenshots.py

lint: install
	$(VENV)/bin/ruff check hub plugins tests bench

clean:
	rm -rf $(VENV) web/node_modules .voltwatch-demo

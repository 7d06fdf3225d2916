# Voltwatch: `make run` starts the demo site, `make test` runs the whole suite.
# Everything third-party comes from PyPI, Debian and npm at install time.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
TEST_PLUGINS := $(patsubst %/pyproject.toml,%,$(wildcard tests/plugins/*/pyproject.toml))
STAMP := $(VENV)/.installed
WEB_STAMP := web/node_modules/.installed
PYTEST_ARGS ?=

.PHONY: install run test bench lint system-deps services clean screenshots

install: $(STAMP) $(WEB_STAMP)

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS)) $(addsuffix /pyproject.toml,$(TEST_PLUGINS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -e '.[test]' $(addprefix -e ,$(PLUGINS)) $(addprefix -e ,$(TEST_PLUGINS))
	touch $@

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(VENV)/bin/voltwatch demo

# System packages the tests talk to for real (Mosquitto, PostgreSQL, Chromium).
system-deps:
	@bash scripts/system-deps.sh

test: install system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py

lint: install
	$(VENV)/bin/ruff check hub plugins tests bench

clean:
	rm -rf $(VENV) web/node_modules .voltwatch-demo

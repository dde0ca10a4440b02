# The two commands a newcomer needs: `make demo` and `make test`. Both work on a fresh machine that has
# Python 3.11+, pip and npm: they create .venv and node_modules themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JOBS ?= auto

.PHONY: setup test unit features report demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

lint: setup
	$(BIN)/ruff check .

# Unit, property and CLI tests (allure-pytest), then every feature against simulators (allure-pytest-bdd),
# into one results folder; then the HTML report is built, so a broken report pipeline fails CI too.
test: setup lint
	rm -rf reports/allure-results
	$(BIN)/pytest -n $(JOBS) --alluredir reports/allure-results tests
	$(BIN)/harness run -- -n $(JOBS)
	$(BIN)/harness report

# The main job on simulators: every feature, the report, a pass/fail summary. The report is written even
# when a scenario fails; the exit code still says so.
demo: setup
	@rm -rf reports/allure-results reports/html
	@status=0; $(BIN)/harness run -- -n $(JOBS) -q || status=$$?; \
	$(BIN)/harness report; \
	if [ $$status -eq 0 ]; then echo "demo: PASS"; else echo "demo: FAIL (see reports/html/index.html)"; fi; \
	exit $$status

bench: setup
	$(BIN)/python benchmarks/multispeq_backup.py
	$(BIN)/python benchmarks/gmi_stream.py

clean:
	rm -rf reports/allure-results reports/html .harness store

# Two entry points for a fresh machine: `make demo` and `make test`.
# The venv is rebuilt only when pyproject.toml changes (stamp files under .make/).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := .make

.PHONY: demo test lint install clean

$(STAMP)/base: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/test: $(STAMP)/base
	$(BIN)/python -m pip install -q -e '.[test]'
	@mkdir -p $(STAMP) && touch $@

install: $(STAMP)/base

demo: $(STAMP)/base
	$(BIN)/jewelrec demo $(DEMO_ARGS)

test: $(STAMP)/test
	bash scripts/ensure-chromium.sh
	$(BIN)/ruff check jewelrec tests benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)/test
	$(BIN)/ruff check jewelrec tests benchmarks

clean:
	rm -rf $(VENV) $(STAMP)

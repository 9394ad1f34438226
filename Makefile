# The two commands: `make demo` (the main job) and `make test`. Both set up everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench lint loadtest clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,servers]'
	touch $@

demo: setup
	$(BIN)/rtml demo

# CI runs this: static checks of the shipped code, then every test on real servers.
test: setup
	$(BIN)/ruff check shared services infra rtml
	$(BIN)/mypy shared services infra rtml
	$(BIN)/pytest

bench: setup
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script --quick || exit 1; done

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --exclude 'docs/*' .
	$(BIN)/mypy

# Locust lives in its own extra: gevent patches the stdlib, so no service ever imports it.
loadtest: setup
	$(BIN)/python -m pip install -q -e '.[loadtest]'
	$(BIN)/rtml infra up
	loadtest/run.sh --standalone

clean:
	$(BIN)/rtml infra down || true
	rm -rf .rtml

# The two commands a new user needs: `make demo` and `make test`. Both set up .venv when missing.
PYTHON ?= python3
VENV ?= .venv
LEGACY_VENV ?= .venv-legacy
BIN = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-legacy bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The oldest supported leg: Celery 5.5 with the kombu and redis-py it pins.
$(LEGACY_VENV)/bin/.installed: pyproject.toml
	$(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_VENV)/bin/pip install -q --upgrade pip
	$(LEGACY_VENV)/bin/pip install -q 'celery[redis]==5.5.3' -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m examples.demo $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-legacy: $(LEGACY_VENV)/bin/.installed
	$(LEGACY_VENV)/bin/python -m pytest -q -m legacy $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) $(LEGACY_VENV) .pytest_cache

# The two commands of the README: `make run` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kfbatch needs Python >= 3.11: run make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(INSTALLED)

## make run: run the demo pipeline locally end to end (ARGS="trainer.epochs=2" to override)
run: $(INSTALLED)
	$(BIN)/kfbatch run $(ARGS)

## make test: lint, layer contracts and the test suite
test: $(INSTALLED) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## make bench: every benchmark in benchmarks/ (each prints a table and a JSON last line)
bench: $(INSTALLED)
	@for script in $$(grep -l '__name__ == "__main__"' benchmarks/*.py); do \
		echo "== $$script"; \
		$(BIN)/python -m benchmarks.$$(basename $$script .py) || exit 1; \
	done

clean:
	rm -rf runs build dist *.egg-info .pytest_cache .ruff_cache

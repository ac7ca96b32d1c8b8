# The two commands of the README: `make run` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

CONSTRAINTS := constraints.txt

.PHONY: run test lint bench lock clean

# Installs through the exact versions of constraints.txt (pyproject.toml holds ranges).
$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kfbatch needs Python >= 3.11: run make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	touch $(INSTALLED)

## make lock: re-resolve pyproject.toml's ranges in a scratch venv and write constraints.txt
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet ".[test]"
	{ echo "# Exact versions make, CI and the image install (make lock rewrites this file)."; \
	  echo "# Local build tags are dropped: torch==X also accepts a CPU build X+cpu."; \
	  .lock-venv/bin/python -m pip freeze --exclude kfbatch | sed -E 's/\+[A-Za-z0-9.]+$$//'; \
	} > $(CONSTRAINTS)
	rm -rf .lock-venv

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

## make image: build the component image (IMAGE=name:tag, TORCH=cpu|cuda); needs Docker
IMAGE ?= ghcr.io/kfbatch/kfbatch:0.1.0
TORCH ?= cpu
.PHONY: image
image:
	@if docker info >/dev/null 2>&1; then \
		docker build --build-arg TORCH=$(TORCH) -t $(IMAGE) . ; \
	else \
		echo "make image: no Docker daemon here, so no image was built (tests/pipelines/kubeflow/test_image.py runs the compiled tasks from the wheel instead)" >&2; \
		exit 1; \
	fi

## make manifests: render the GitOps tree (manifests/); make manifests-check: fail when stale
.PHONY: manifests manifests-check checkov
manifests: $(INSTALLED)
	$(BIN)/kfbatch manifests $(ARGS)

manifests-check: $(INSTALLED)
	$(BIN)/kfbatch manifests --check $(ARGS)

## make checkov: security scan of every built overlay. checkov pins many dependencies of its
## own, so it gets its own virtual environment (.venv-checkov), installed from the package index.
CHECKOV_VENV ?= .venv-checkov
$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet "checkov>=3.2,<4"

checkov: $(CHECKOV_VENV)/bin/checkov
	@rm -rf build/overlays && mkdir -p build/overlays
	@for overlay in manifests/overlays/*/; do \
		kubectl kustomize $$overlay > build/overlays/$$(basename $$overlay).yaml || exit 1; \
	done
	$(CHECKOV_VENV)/bin/checkov --config-file tests/pipelines/manifests/checkov.yaml -d build/overlays

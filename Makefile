# cocolake: `make ingest` then `make test` on a fresh clone; everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
WORKERS ?=
PYTEST_ARGS ?=

.PHONY: venv ingest test test-fast smoke bench clean

# setup.py and the C source: pip install -e rebuilds the extension when they change
$(BIN)/cocolake: pyproject.toml setup.py pipeline/_rlekernel.c pipeline/_jsonscan.c pipeline/_jsonpoly.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/cocolake

venv: $(BIN)/cocolake

ingest: venv
	$(BIN)/cocolake ingest --config $(CONFIG) $(if $(WORKERS),--workers $(WORKERS),)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

# build the sdist and wheel, install the wheel into a new virtualenv, run it end to end
smoke:
	PYTHON=$(PYTHON) bash .ci/smoke

bench: venv
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf warehouse .cache/cocolake

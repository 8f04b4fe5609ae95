# cocolake: `make ingest` then `make test` on a fresh clone; everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml
WORKERS ?=
PYTEST_ARGS ?=

.PHONY: venv ingest test test-fast bench clean

$(BIN)/cocolake: pyproject.toml
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

bench: venv
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf warehouse .cache/cocolake

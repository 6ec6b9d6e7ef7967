# Everything a fresh machine needs: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint mutate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	# openpi's client, to test the server against it; it declares numpy<2 but runs on numpy 2 (tested)
	$(BIN)/pip install --quiet --no-deps openpi-client==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/kidata demo --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check kidata tests benchmarks

# --durations: the slowest tests in every CI log, so the suite's 15-minute budget is watched where it is spent
test: lint
	$(BIN)/python -m pytest -q --durations=15

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

mutate: $(STAMP)
	$(BIN)/python benchmarks/mutation_check.py

bench: $(STAMP)
	RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 $(BIN)/python benchmarks/fast_bench.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache

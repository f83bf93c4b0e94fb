# queuebot: `make run` runs it, `make test` runs the tests; both create .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install run test check bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/queuebot run

test: $(STAMP)
	$(BIN)/pytest -q

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Every figure of the performance issue (a few minutes; progress on stderr, the table at the end).
bench: $(STAMP)
	$(BIN)/python bench/all.py --out bench/results/latest.json

# The same scripts at small sizes: checks they run, figures not to quote.
bench-quick: $(STAMP)
	$(BIN)/python bench/all.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# One task runner for the project. Each target works on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## exit 1 is expected: the sample sheet shows every failure status too
	rm -f sample_data/corrections.checkpoint.sqlite* sample_data/corrections.audit.csv
	$(BIN)/corrections apply --sandbox sample_data/corrections.csv || test $$? -eq 1
	@echo "--- the same command again: resumes from the checkpoint, applies nothing twice ---"
	$(BIN)/corrections apply --sandbox sample_data/corrections.csv || test $$? -eq 1

test: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/mypy pipeline
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/mypy pipeline

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info

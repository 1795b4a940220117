# Two set-up commands, both safe on a fresh machine with no GPU:
#   make demo   create .venv, install dxkit, run the end-to-end demo
#   make test   create .venv if needed, install, run the default test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dxkit-installed

.PHONY: demo test test-slow lint bench browser-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dicom-out]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dxkit demo

# Browser tests need Debian's chromium; install it when we can (root + apt), else they skip.
browser-deps:
	@bash scripts/ensure-chromium.sh

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest

test-slow: $(STAMP) browser-deps
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench: $(STAMP)
	$(BIN)/dxkit bench medmnist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

# Two set-up commands, both safe on a fresh machine with no GPU:
#   make demo   create .venv, install dxkit, run the end-to-end demo
#   make test   create .venv if needed, install, run the default test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dxkit-installed
LOCK   := requirements/lock.txt
# Every install takes the exact tested set in $(LOCK) as pip constraints (make lock renews it).
PIP    := $(BIN)/python -m pip install --quiet --constraint $(LOCK)

.PHONY: demo test test-slow test-typer-floor lint lock check-lock bench browser-deps pacs-deps clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) pip setuptools wheel
	# No build isolation: dxkit is built with the locked setuptools, not today's release.
	$(PIP) --no-build-isolation -e ".[dev,dicom-out,pacs]"
	$(BIN)/python scripts/check_lock.py $(LOCK)
	touch $(STAMP)

# Resolve pyproject.toml's ranges afresh in a clean venv and rewrite $(LOCK).
lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh

check-lock: $(STAMP)
	$(BIN)/python scripts/check_lock.py $(LOCK)

demo: $(STAMP)
	$(BIN)/dxkit demo

# Browser tests need Debian's chromium; install it when we can (root + apt), else they skip.
browser-deps:
	@bash scripts/ensure-chromium.sh

# PACS tests need Debian's orthanc + orthanc-dicomweb; same rule as chromium.
pacs-deps:
	@bash scripts/ensure-orthanc.sh

test: $(STAMP) browser-deps pacs-deps
	$(BIN)/python -m pytest

test-slow: $(STAMP) browser-deps pacs-deps
	$(BIN)/python -m pytest -m slow

# The CLI's usage errors on the oldest typer that pyproject.toml allows.
test-typer-floor: $(STAMP)
	bash scripts/check-typer-floor.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/dxkit bench medmnist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

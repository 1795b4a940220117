#!/usr/bin/env bash
# The CLI's usage-error promise on the oldest typer pyproject.toml allows (typer >= 0.18 runs
# on click; newer releases carry their own copy of it). Installs that typer beside the venv's
# packages in a temporary folder and reruns the console-script tests with it first on the path.
set -euo pipefail
cd "$(dirname "$0")/.."
floor=$(sed -nE 's/^ *"typer>=([0-9.]+).*/\1/p' pyproject.toml)
[ -n "$floor" ] || { echo "no typer>= floor in pyproject.toml" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip install --quiet --no-deps --target "$tmp" "typer==$floor" "typer-slim==$floor"
got=$(PYTHONPATH="$tmp" .venv/bin/python -c 'import typer; print(typer.__version__)')
[ "$got" = "$floor" ] || { echo "expected typer $floor on the path, got $got" >&2; exit 1; }
echo "CLI usage errors on typer $got (the floor):"
PYTHONPATH="$tmp" .venv/bin/python -m pytest -q -p no:cacheprovider tests/cli/test_usage_errors.py

#!/usr/bin/env bash
# `make lock`: resolve pyproject.toml's ranges afresh in a clean virtualenv and write the exact
# set that resolved to requirements/lock.txt. `make demo` / `make test` install with that file
# as pip constraints, so a fresh clone gets the set CI tested, whatever the registry serves
# later. Rerun it (then `make test`) to move to newer releases on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
extras=${LOCK_EXTRAS:-dev,dicom-out,pacs}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
"$tmp/venv/bin/python" -m pip install --quiet ".[$extras]"
{
  echo "# The exact package set dxkit's tests passed with: pip constraints for make demo / test."
  echo "# Written by 'make lock' (scripts/lock.sh) from pyproject.toml [$extras] on"
  echo "# $("$tmp/venv/bin/python" -c 'import platform, sys; print(f"Python {sys.version.split()[0]}, {platform.system()} {platform.machine()}")'), $(date -u +%Y-%m-%d). Do not edit by hand."
  "$tmp/venv/bin/python" -m pip freeze --all --exclude dxkit | LC_ALL=C sort -f
} > requirements/lock.txt.new
mv requirements/lock.txt.new requirements/lock.txt
echo "wrote requirements/lock.txt ($(grep -vc '^#' requirements/lock.txt) packages)"

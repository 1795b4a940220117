"""Usage errors from the installed ``dxkit`` script: typer's usage line, one error line,
exit 2, never a traceback; ``--version`` prints the package version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dxkit

# The console script pip installed beside this interpreter (the one a user runs).
SCRIPT = Path(sys.executable).with_name("dxkit")


def dxkit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"no dxkit console script beside {sys.executable}: pip install -e ."
    env = {k: v for k, v in os.environ.items() if k != "DXKIT_DEBUG"}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, check=False, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], r"no such command 'nosuch'"),
        (["train"], "missing argument 'config'"),
        (["predict"], "missing argument 'checkpoint'"),
        (["train", "x.yaml", "--epochs", "3"], r"no such option:? '?--epochs"),
        (["serve", "run", "--port", "abc"], "invalid value for '--port'"),
        (["bench", "nosuch"], "no such command 'nosuch'"),
        (["prepare", "dicom"], "missing argument 'folder'"),
    ],
)
def test_usage_error_is_one_line_exit_2(args: list[str], message: str) -> None:
    proc = dxkit_cli(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert "Usage: dxkit" in out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and re.search(message, errors[0].lower()), out


def test_version_prints_the_package_version() -> None:
    proc = dxkit_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"dxkit {dxkit.__version__}"


def test_user_error_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = dxkit_cli("train", str(tmp_path / "missing.yaml"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out
    assert "missing.yaml" in out and len(out.strip().splitlines()) <= 2

"""The CLI: --help everywhere, one-line user errors with exit code 2, --debug tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dxkit.cli import main

COMMANDS = ["init", "train", "evaluate", "predict", "lr-find", "demo", "bench", "bench medmnist",
            "bench overhead", "bench dicom", "bench seg", "bench serve", "serve", "export",
            "explore", "prepare", "prepare dicom", "prepare rsna"]  # fmt: skip


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run([*command.split(), "--help"], capsys)
    assert code == 0 and "Usage" in out


def test_missing_config_is_exit_2_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["train", "does-not-exist.yaml"], capsys)
    assert code == 2
    assert "does-not-exist.yaml" in out and "Traceback" not in out


def test_unknown_config_key_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "trian": {}}))
    code, out = run(["train", str(cfg)], capsys)
    assert code == 2 and "unknown key 'trian'" in out


def test_bad_npz_keys_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = tmp_path / "breastmnist.npz"
    np.savez(npz, images=np.zeros((2, 28, 28), np.uint8))
    cfg = tmp_path / "c.yaml"
    raw = {"name": "x", "output_dir": str(tmp_path / "runs"),
           "data": {"source": "medmnist", "name": "breastmnist", "path": str(npz)}}  # fmt: skip
    cfg.write_text(yaml.safe_dump(raw))
    code, out = run(["train", str(cfg)], capsys)
    assert code == 2 and "breastmnist.npz" in out and "train_images" in out


def test_debug_shows_traceback() -> None:
    cmd = [sys.executable, "-m", "dxkit", "train", "nope.yaml", "--debug"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_predict_unreadable_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["predict", str(tmp_path / "missing.ckpt"), str(tmp_path / "a.png")], capsys)
    assert code == 2 and "missing.ckpt" in out

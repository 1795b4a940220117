"""Issue 15, findings 2 and 8: an unexpected exception in a command is one line (named as a
bug, with how to get the traceback) and exit 2; a failed run does not take the run name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import dxkit.train.fit as fit_module
from dxkit.cli import main
from dxkit.train.config import RunConfig
from dxkit.train.run_folder import FAILED_MARKER


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    raw = {"name": "crash", "output_dir": str(tmp_path / "runs"), "data": {"name": "x"}}
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def _crashing_fit(save_checkpoint: bool) -> Any:
    def fit(cfg: RunConfig, resume: bool = False) -> None:
        run_dir = fit_module.new_run_dir(cfg)
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        if save_checkpoint:
            (run_dir / "checkpoints").mkdir()
            (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
        raise ZeroDivisionError("float division by zero")

    return fit


def test_internal_error_is_one_line_and_the_empty_run_folder_goes(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setattr(fit_module, "fit", _crashing_fit(save_checkpoint=False))
    code, out = run(["train", str(recipe)], capsys)
    assert code == 2 and "Traceback" not in out
    assert "internal error (ZeroDivisionError: float division by zero)" in out
    assert "dxkit bug" in out and "--debug" in out
    assert not (tmp_path / "runs" / "crash").exists()
    # the next run gets the name, not crash-2
    code, _ = run(["train", str(recipe)], capsys)
    assert not (tmp_path / "runs" / "crash-2").exists()
    with pytest.raises(ZeroDivisionError):
        main(["train", str(recipe), "--debug"])


def test_failed_run_with_checkpoints_is_marked(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setattr(fit_module, "fit", _crashing_fit(save_checkpoint=True))
    code, _ = run(["train", str(recipe)], capsys)
    marker = tmp_path / "runs" / "crash" / FAILED_MARKER
    assert code == 2 and marker.read_text().startswith("ZeroDivisionError")
    assert (tmp_path / "runs" / "crash" / "checkpoints" / "last.ckpt").is_file()


def test_machine_errors_are_not_called_bugs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from dxkit.cli import unexpected_error_line

    line = unexpected_error_line(OSError(28, "No space left on device"))
    assert "bug" not in line and "disk" in line
    assert "dxkit bug" in unexpected_error_line(KeyError("x"))

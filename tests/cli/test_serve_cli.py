"""`dxkit serve` refuses to expose a token-less server, reads the token from a file or the
environment, and says which Host names it answers to (the checks run before any model
loads, so no checkpoint is needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dxkit.cli import main
from dxkit.cli.serve import read_token, serve_hosts
from dxkit.errors import ConfigError


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), " ".join((captured.out + captured.err).split())


def test_binding_beyond_loopback_needs_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DXKIT_TOKEN", raising=False)
    code, out = run(["serve", str(tmp_path / "none.ckpt"), "--host", "0.0.0.0"], capsys)
    assert code == 2, out
    assert "no token" in out and "DXKIT_TOKEN" in out and "--token-file" in out
    assert "--insecure-no-token" in out and "Traceback" not in out


def test_token_from_file_env_and_not_both(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("  s3cret-from-file \nignored\n")
    assert read_token(None, secret) == "s3cret-from-file"
    assert read_token("from-env", None) == "from-env"
    assert read_token("", None) is None
    with pytest.raises(ConfigError, match="give one"):
        read_token("from-env", secret)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_token(None, tmp_path / "empty")
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(None, tmp_path / "missing")


def test_allowed_hosts_loopback_plus_what_is_named() -> None:
    assert serve_hosts("127.0.0.1", []) == ["127.0.0.1", "localhost", "::1"]
    assert serve_hosts("0.0.0.0", ["Scanner.lan"]) == ["127.0.0.1", "localhost", "::1",
                                                      "scanner.lan"]  # fmt: skip
    assert serve_hosts("10.0.0.5", []) == ["127.0.0.1", "localhost", "::1", "10.0.0.5"]


def test_help_warns_that_token_is_visible(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(["serve", "--help"], capsys)
    assert code == 0
    assert "process list" in out and "--token-file" in out and "--allowed-host" in out

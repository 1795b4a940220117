"""Errors of the PACS integration (all ``DxkitError``: the CLI exits 2 with the message)."""

from __future__ import annotations

from dxkit.errors import DxkitError


class PacsError(DxkitError, RuntimeError):
    """The PACS could not be reached or refused a request, after the retries."""


class NoSuitableSeriesError(DxkitError, ValueError):
    """A study has no series the model can read (reported, never guessed)."""

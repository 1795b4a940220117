"""The one small error hierarchy every part of dxkit raises from.

Each error subclasses the builtin a caller would naturally catch, and its message names
the file or key, the offending value and the fix. The CLI turns any ``DxkitError`` into a
one-line message and exit code 2 (user error); ``--debug`` shows the traceback.
"""

from __future__ import annotations


class DxkitError(Exception):
    """Base of all errors that describe bad input or a bad request by the user."""


class InvalidScanError(DxkitError, ValueError):
    """A scan (image, volume, DICOM) is unreadable, mis-shaped, non-finite or inconsistent."""


class UnsupportedFormatError(DxkitError, ValueError):
    """A file type, transfer syntax or encoding dxkit has no reader/handler for."""


class ConfigError(DxkitError, ValueError):
    """A configuration file or override has an unknown key or a bad value."""


class CheckpointError(DxkitError, RuntimeError):
    """A checkpoint or bundle is missing, corrupt, untrusted or does not match the input."""


class DataSourceError(DxkitError, ValueError):
    """A dataset (npz, CSV, folder layout, label file) is missing pieces or inconsistent."""


class MissingFileError(DxkitError, FileNotFoundError):
    """A path the user named does not exist."""

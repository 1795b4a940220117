"""What a received file is, and the limits every request is held to.

A file is copied into the request's private folder under a neutral name (``file-1``) and
typed from its first bytes, never from the name the client gave it; the client's name is
kept only to put into the messages sent back to that client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dxkit.errors import DxkitError

CHUNK = 1 << 20


class RequestError(DxkitError, ValueError):
    """A request the server refuses (a bad upload, a scan the model cannot take);
    ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Per-request limits. ``max_pixels`` counts decoded values (rows × columns × frames ×
    samples) over all files of the request."""

    max_upload_bytes: int = 256 * 2**20
    max_pixels: int = 64 * 2**20
    max_files: int = 1000
    max_unzipped_bytes: int = 1024 * 2**20

    def as_dict(self) -> dict[str, int]:
        return {
            "max_upload_mb": self.max_upload_bytes // 2**20,
            "max_pixels": self.max_pixels,
            "max_files": self.max_files,
            "max_unzipped_mb": self.max_unzipped_bytes // 2**20,
        }


@dataclass
class ReceivedFile:
    path: Path  # neutral name inside the private folder
    client: str  # the name the client gave (for its own error messages only)
    kind: str  # dicom | raster | npy


class PixelBudget:
    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def take(self, count: int, client: str) -> None:
        if count > self.left:
            raise RequestError(
                f"{client}: decodes to {count:,} pixel values, over this server's limit of "
                f"{self.limit:,} per request (--max-pixels); send a smaller scan or fewer slices",
                413,
            )
        self.left -= count


def sniff(head: bytes) -> str | None:
    """The format from a file's first bytes (never from its name)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "raster"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    return None


ACCEPTED = "PNG, JPEG, DICOM (one file, several files of a series, or a zip of them), .npy"
SUFFIX = {"dicom": ".dcm", "raster": ".img", "npy": ".npy", "zip": ".zip"}


def copy_capped(src: IO[bytes], dest: Path, cap: int, what: str) -> int:
    """Copy a stream to ``dest`` and stop with 413 once it passes ``cap`` bytes."""
    total = 0
    with dest.open("wb") as out:
        while block := src.read(CHUNK):
            total += len(block)
            if total > cap:
                raise RequestError(f"{what}: larger than the {cap // 2**20} MB limit", 413)
            out.write(block)
    return total


def classify(path: Path, client: str) -> ReceivedFile:
    with path.open("rb") as fh:
        kind = sniff(fh.read(132))
    if kind is None:
        raise RequestError(
            f"{client}: not a file type this server reads; it accepts {ACCEPTED}", 415
        )
    final = path.with_suffix(SUFFIX[kind])
    path.rename(final)
    return ReceivedFile(final, client, kind)

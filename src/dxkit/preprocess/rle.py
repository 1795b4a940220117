"""Run-length encoded masks: the SIIM "relative" code, the standard Kaggle code, and their CSVs.

Two encodings of a binary mask as a string of integer pairs, pixels numbered over the
flattened image (column-major, ``order="F"``, as SIIM does; ``order="C"`` for row-major):

- ``relative`` (SIIM-ACR pneumothorax): pairs of (gap from the end of the previous run,
  run length); the first gap counts from pixel 0.
- ``absolute`` (most Kaggle segmentation competitions): pairs of (1-based start, length).

``-1`` (or an empty string) is an empty mask. Several CSV rows for one image are OR-ed.

Why our own code: no maintained library reads SIIM's relative code, and the snippets that
circulate loop over pixels in Python. Everything here is vectorised NumPy (runs are turned
into flat indices with ``np.repeat``, a mask into runs with ``np.diff``), about two orders of
magnitude faster than the per-pixel reference (``dxkit bench seg`` measures it).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dxkit.errors import DataSourceError, MissingFileError

Encoding = Literal["relative", "absolute"]
Order = Literal["F", "C"]
EMPTY = "-1"
_HEADER_IDS = {"imageid", "image_id", "id"}


@dataclass(frozen=True)
class RleRow:
    """One CSV row: its line number in the file (1-based), ImageId and encoded pixels."""

    line: int
    image_id: str
    encoded: str


def is_empty(rle: str) -> bool:
    """True for the empty-mask codes ``-1`` and the blank string."""
    text = rle.strip()
    return text in ("", EMPTY)


def parse_rle(rle: str, *, where: str = "RLE") -> np.ndarray:
    """The integer pairs of ``rle`` as an int64 ``(K, 2)`` array (``K = 0`` when empty).

    Raises ``DataSourceError`` naming ``where`` for non-integers, an odd count or negatives.
    """
    if is_empty(rle):
        return np.zeros((0, 2), dtype=np.int64)
    tokens = rle.split()
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next((t for t in tokens if not t.lstrip("+-").isdigit()), tokens[0])
        raise DataSourceError(
            f"{where}: EncodedPixels holds {bad!r}, which is not an integer; an RLE is "
            "space-separated integers (or -1 for an empty mask) — fix or drop the row"
        ) from None
    if values.size % 2:
        raise DataSourceError(
            f"{where}: EncodedPixels has {values.size} values, an odd number; it must be "
            "(start, length) pairs — the row is probably truncated, fix or drop it"
        )
    if (values < 0).any():
        bad_at = int(np.flatnonzero(values < 0)[0])
        raise DataSourceError(
            f"{where}: EncodedPixels holds the negative value {int(values[bad_at])} at position "
            f"{bad_at + 1}; only a lone -1 (empty mask) may be negative — fix or drop the row"
        )
    return values.reshape(-1, 2)


def runs_from_pairs(
    pairs: np.ndarray, *, encoding: Encoding = "relative", where: str = "RLE"
) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, lengths)`` as 0-based flat pixel indices, whatever the encoding."""
    if encoding == "relative":
        gaps, lengths = pairs[:, 0], pairs[:, 1]
        ends_before = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        starts = np.cumsum(gaps) + ends_before
    elif encoding == "absolute":
        if (pairs[:, 0] == 0).any():
            raise DataSourceError(
                f"{where}: absolute RLE starts are 1-based, but one start is 0; "
                "is this the SIIM relative encoding? pass encoding='relative'"
            )
        starts, lengths = pairs[:, 0] - 1, pairs[:, 1]
    else:
        raise DataSourceError(
            f"{where}: unknown RLE encoding {encoding!r}; use 'relative' or 'absolute'"
        )
    return starts, lengths


def _check_order(order: str) -> None:
    if order not in ("F", "C"):
        raise DataSourceError(
            f"unknown pixel order {order!r}; use 'F' (column-major, SIIM) or 'C' (row-major)"
        )


def _check_shape(shape: tuple[int, int], where: str) -> tuple[int, int]:
    if len(shape) != 2 or min(int(shape[0]), int(shape[1])) <= 0:
        raise DataSourceError(f"{where}: a mask shape must be (rows, columns) > 0, got {shape}")
    return int(shape[0]), int(shape[1])


def decode_rle(
    rle: str,
    shape: tuple[int, int],
    *,
    encoding: Encoding = "relative",
    order: Order = "F",
    where: str = "RLE",
) -> np.ndarray:
    """One RLE string → a ``uint8`` mask of ``shape`` with values 0/1."""
    return decode_rows([rle], shape, encoding=encoding, order=order, where=where)


def checked_runs(
    rle: str,
    shape: tuple[int, int],
    *,
    encoding: Encoding = "relative",
    where: str = "RLE",
) -> tuple[np.ndarray, np.ndarray]:
    """0-based ``(starts, lengths)`` of one RLE, checked to lie inside an image of ``shape``."""
    rows, cols = _check_shape(shape, where)
    starts, lengths = runs_from_pairs(parse_rle(rle, where=where), encoding=encoding, where=where)
    if starts.size and int((starts + lengths).max()) > rows * cols:
        raise DataSourceError(
            f"{where}: the RLE runs to pixel {int((starts + lengths).max())}, past the end of "
            f"the {rows}×{cols} image ({rows * cols} pixels); check the image size and the "
            f"encoding ({encoding!r})"
        )
    return starts, lengths


def foreground_pixels(
    rles: Sequence[str],
    shape: tuple[int, int],
    *,
    encoding: Encoding = "relative",
    where: str = "RLE",
) -> int:
    """Sum of run lengths of an image's rows (> 0 exactly when its mask is not empty).

    Checks every row as ``decode_rows`` would, without building the mask.
    """
    if isinstance(rles, str):
        rles = [rles]
    total = 0
    for k, rle in enumerate(rles):
        here = where if len(rles) == 1 else f"{where} (RLE {k + 1} of {len(rles)})"
        total += int(checked_runs(rle, shape, encoding=encoding, where=here)[1].sum())
    return total


def decode_rows(
    rles: Sequence[str],
    shape: tuple[int, int],
    *,
    encoding: Encoding = "relative",
    order: Order = "F",
    where: str = "RLE",
) -> np.ndarray:
    """Several RLE rows of one image OR-ed into one ``uint8`` 0/1 mask of ``shape``."""
    rows, cols = _check_shape(shape, where)
    _check_order(order)
    if isinstance(rles, str):
        rles = [rles]
    flat = np.zeros(rows * cols, dtype=np.uint8)
    for k, rle in enumerate(rles):
        here = where if len(rles) == 1 else f"{where} (RLE {k + 1} of {len(rles)})"
        starts, lengths = checked_runs(rle, shape, encoding=encoding, where=here)
        if starts.size == 0:
            continue
        # Flat indices of every covered pixel: run k contributes starts[k] + 0..lengths[k]-1.
        covered = int(lengths.sum())
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        index = np.arange(covered, dtype=np.int64) + offsets
        if order == "F":
            # Column-major index → row-major index, so no transposed copy of the mask is needed.
            index = (index % rows) * cols + index // rows
        flat[index] = 1
    return flat.reshape(rows, cols)


def _foreground(mask: np.ndarray) -> np.ndarray:
    """A C-contiguous bool view of the mask's foreground, without a copy when it is 0/1."""
    m = np.ascontiguousarray(mask)
    if m.dtype == np.bool_:
        return m
    if m.dtype == np.uint8 and m.size and int(m.max()) <= 1:
        return m.view(np.bool_)  # 0/1 bytes are valid booleans; saves a megabyte per mask
    return m != 0


def mask_runs(mask: np.ndarray, *, order: Order = "F") -> tuple[np.ndarray, np.ndarray]:
    """0-based ``(starts, lengths)`` of the foreground runs of a 2-D mask (non-zero = inside)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DataSourceError(f"RLE encoding needs a 2-D (H, W) mask, got shape {m.shape}")
    _check_order(order)
    inside = _foreground(m)
    rows, cols = inside.shape
    if inside.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if order == "C":
        flat = inside.ravel()
        edges = np.empty(flat.size + 1, dtype=bool)
        edges[0], edges[-1] = flat[0], flat[-1]
        np.not_equal(flat[1:], flat[:-1], out=edges[1:-1])
        bounds = np.flatnonzero(edges)  # alternating run starts and ends
        return bounds[0::2], bounds[1::2] - bounds[0::2]
    # Column-major runs found on the row-major array (a transposed copy costs more than all
    # the rest): a run starts where a pixel is inside and the pixel before it in column order
    # (the one above, or the bottom of the previous column) is outside; it ends likewise.
    # One scratch buffer is reused: fresh megabyte arrays cost page faults on every call.
    edge = np.empty_like(inside)
    np.greater(inside[1:], inside[:-1], out=edge[1:])
    np.greater(inside[0, 1:], inside[-1, :-1], out=edge[0, 1:])
    edge[0, 0] = inside[0, 0]
    r, c = np.divmod(np.flatnonzero(edge), cols)  # row-major → column-major positions
    starts = np.sort(c * rows + r)
    np.greater(inside[:-1], inside[1:], out=edge[:-1])
    np.greater(inside[-1, :-1], inside[0, 1:], out=edge[-1, :-1])
    edge[-1, -1] = inside[-1, -1]
    r, c = np.divmod(np.flatnonzero(edge), cols)
    return starts, np.sort(c * rows + r) + 1 - starts


def _join(pairs: np.ndarray) -> str:
    return " ".join(map(str, pairs.ravel().tolist()))


def encode_rle(
    mask: np.ndarray,
    *,
    encoding: Encoding = "relative",
    order: Order = "F",
    empty: str = EMPTY,
) -> str:
    """A 2-D mask → its RLE string (``empty`` when the mask has no foreground)."""
    starts, lengths = mask_runs(mask, order=order)
    if starts.size == 0:
        return empty
    if encoding == "relative":
        previous_ends = np.concatenate(([0], (starts + lengths)[:-1]))
        firsts = starts - previous_ends
    elif encoding == "absolute":
        firsts = starts + 1
    else:
        raise DataSourceError(f"unknown RLE encoding {encoding!r}; use 'relative' or 'absolute'")
    return _join(np.stack([firsts, lengths], axis=1))


def _is_header(row: list[str]) -> bool:
    names = [cell.strip().lower() for cell in row]
    return any(n in _HEADER_IDS for n in names) or any("pixels" in n for n in names)


def read_rle_rows(path: Path | str) -> list[RleRow]:
    """All rows of an ``ImageId,EncodedPixels`` CSV, with or without header and BOM.

    Only the CSV structure is checked here; ``parse_rle`` checks each RLE.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such RLE CSV file; check the path")
    rows: list[RleRow] = []
    id_col, rle_col, width = 0, 1, 2
    seen_first = False
    try:
        # utf-8-sig strips a byte-order mark when there is one and is plain UTF-8 otherwise.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                if not seen_first:
                    seen_first = True
                    if _is_header(row):
                        names = [c.strip().lower() for c in row]
                        id_col = next((i for i, n in enumerate(names) if n in _HEADER_IDS), 0)
                        rle_col = next((i for i, n in enumerate(names) if "pixels" in n), 1)
                        width = len(row)
                        continue
                if len(row) != width:
                    raise DataSourceError(
                        f"{path} row {reader.line_num}: expected {width} columns "
                        f"(ImageId,EncodedPixels), got {len(row)}: {','.join(row)[:80]!r}; "
                        "fix the row"
                    )
                image_id = row[id_col].strip()
                if not image_id:
                    raise DataSourceError(
                        f"{path} row {reader.line_num}: empty ImageId; fix or drop the row"
                    )
                rows.append(RleRow(reader.line_num, image_id, row[rle_col].strip()))
    except UnicodeDecodeError as exc:
        raise DataSourceError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from exc
    except csv.Error as exc:
        raise DataSourceError(f"{path}: malformed CSV ({exc}); fix the file") from exc
    return rows


def row_where(path: Path | str, row: RleRow) -> str:
    """How error messages name one CSV row: file, line and ImageId."""
    return f"{path} row {row.line} (ImageId {row.image_id})"


def read_rle_csv(path: Path | str) -> dict[str, list[str]]:
    """``{ImageId: [EncodedPixels, ...]}`` in file order, every RLE checked for syntax.

    Raises ``DataSourceError`` naming the row and ImageId of the first bad RLE.
    """
    table: dict[str, list[str]] = {}
    for row in read_rle_rows(path):
        parse_rle(row.encoded, where=row_where(path, row))
        table.setdefault(row.image_id, []).append(row.encoded)
    return table

"""Uploaded files → a ``Scan`` (arrays in the contract's layout), inside hard limits.

What a public endpoint must refuse before it spends memory: too many files, zip members
with absolute paths or ``..``, archives that expand past a size limit (zip bombs), images
or DICOMs whose headers promise more pixels than allowed (decompression bombs) — checked
from the headers, before any pixel is decoded. Files are copied into a private temporary
folder under neutral names (``file-1.dcm``), read with dxkit's own readers, and the folder
is removed when the request ends; the client's file names appear only in the messages sent
back to that client, never in logs.
"""

from __future__ import annotations

import logging
import shutil
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from PIL import Image

from dxkit.errors import InvalidScanError, UnsupportedFormatError
from dxkit.serve.archive import extract_zip
from dxkit.serve.intake import (
    ACCEPTED,
    Limits,
    PixelBudget,
    ReceivedFile,
    RequestError,
    classify,
    copy_capped,
)

log = logging.getLogger("dxkit.serve")
__all__ = ["PLANE_FIELDS", "Limits", "RequestError", "Scan", "read_upload", "remove_workdir"]
PLANE_FIELDS: tuple[str, str, str] = ("axial", "coronal", "sagittal")
ScanKind = Literal["image", "dicom", "series", "array", "exam", "radiograph"]


@dataclass
class Scan:
    """One uploaded study: ``planes`` maps ``"scan"`` (or axial/coronal/sagittal for an
    exam) to float32 ``(C, H, W)`` (one image) or ``(1, D, H, W)`` (a stack of slices).
    A ``radiograph`` (a DICOM read for a segmenter) is ``(1, H, W)`` in [0, 1], as
    ``io.radiograph.read_radiograph`` gives it."""

    kind: ScanKind
    planes: dict[str, np.ndarray]
    files: int
    hounsfield: bool = False
    modality: str | None = None
    file_windows: list[tuple[float, float]] = field(default_factory=list)
    dicom_headers: list[Any] = field(default_factory=list)  # pydicom Datasets, not logged
    description: str | None = None  # the DICOM SeriesDescription (shown to the client)

    def summary(self) -> dict[str, Any]:
        """What the response says about the scan: shapes and modality, no identity."""
        planes = {}
        for name, a in self.planes.items():
            if a.ndim == 4:
                planes[name] = {"slices": a.shape[1], "height": a.shape[2], "width": a.shape[3]}
            else:
                planes[name] = {"slices": 1, "height": a.shape[-2], "width": a.shape[-1]}
            planes[name]["channels"] = int(a.shape[0])
        return {
            "kind": self.kind,
            "files": self.files,
            "modality": self.modality,
            "hounsfield": self.hounsfield,
            "series_description": self.description,
            "planes": planes,
        }


def _receive(stream: IO[bytes], client: str, dest: Path, limits: Limits) -> ReceivedFile:
    if copy_capped(stream, dest, limits.max_upload_bytes, client) == 0:
        raise RequestError(f"{client}: the file is empty (0 bytes); choose the scan again", 400)
    return classify(dest, client)


def _client_message(err: Exception, files: Iterable[ReceivedFile]) -> str:
    """The error text with private temporary paths replaced by the client's file names."""
    text = str(err)
    for f in files:
        text = text.replace(str(f.path), f.client).replace(f.path.name, f.client)
    return text


# --- readers: header first (limits), then dxkit's own reader ------------------------------


def _read_raster(f: ReceivedFile, budget: PixelBudget) -> np.ndarray:
    from dxkit.io.raster import read_raster

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f.path) as im:
                width, height = im.size
                fmt, bands = im.format, len(im.getbands())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise RequestError(f"{f.client}: refused as a decompression bomb ({err})", 413) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(f"{f.client}: not a readable image ({err})", 422) from None
    if fmt not in ("PNG", "JPEG"):
        raise RequestError(f"{f.client}: {fmt} images are not accepted; send PNG or JPEG", 415)
    budget.take(width * height * bands, f.client)
    return read_raster(f.path)


def _open_dicom(f: ReceivedFile, budget: PixelBudget) -> Any:
    from dxkit.io.dicom import lenient_values, open_dataset

    ds = open_dataset(f.path)  # pixel data stays encoded until decoded
    try:
        with lenient_values():  # no pydicom warnings (they are logged with the value)
            rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
            frames = int(ds.get("NumberOfFrames") or 1)
            samples = int(ds.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError) as err:
        raise RequestError(f"{f.client}: unreadable image size tags ({err})", 422) from None
    if min(rows, cols, frames, samples) < 1:
        raise RequestError(
            f"{f.client}: Rows/Columns missing or zero ({rows}×{cols}); it is not an image", 422
        )
    budget.take(rows * cols * frames * samples, f.client)
    return ds


def _npy_header(f: ReceivedFile) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    with f.path.open("rb") as fh:
        try:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise RequestError(f"{f.client}: .npy format version {version} unsupported", 415)
        except (ValueError, EOFError, SyntaxError, struct.error) as err:
            raise RequestError(f"{f.client}: not a readable .npy file ({err})", 422) from None
    if dtype.hasobject:
        raise RequestError(
            f"{f.client}: holds Python objects (a pickle), which this server refuses; "
            "save a plain numeric array",
            422,
        )
    return tuple(int(s) for s in shape), dtype


def _read_npy(f: ReceivedFile, budget: PixelBudget) -> np.ndarray:
    from dxkit.io.arrays import read_npy

    shape, _ = _npy_header(f)
    budget.take(int(np.prod(shape, dtype=np.int64)), f.client)
    return read_npy(f.path).astype(np.float32, copy=False)


def _as_channel_first(array: np.ndarray) -> np.ndarray:
    """``read_scan``'s convention for arrays: 2-D → (1, H, W), 3-D → (1, D, H, W)."""
    return array if array.ndim == 4 else array[None]


# --- assembling the scan ---------------------------------------------------------------


def _radiograph_scan(files: list[ReceivedFile], budget: PixelBudget, scaling: str) -> Scan:
    """One CR/DX DICOM read as a segmenter reads it (``read_radiograph``, its scaling)."""
    from dxkit.io.radiograph import read_radiograph

    if len(files) != 1:
        raise RequestError(
            f"{len(files)} DICOM files were sent; a segmenter reads one radiograph at a time",
            422,
        )
    ds = _open_dicom(files[0], budget)  # the size check, before any pixel is decoded
    pixels = read_radiograph(files[0].path, scaling=scaling).pixels  # type: ignore[arg-type]
    description = str(ds.get("SeriesDescription") or "").strip() or None
    if "PixelData" in ds:
        del ds.PixelData  # keep the header, drop the pixel bytes
    modality = ds.get("Modality")
    return Scan("radiograph", {"scan": pixels[None]}, 1, False, modality, [], [ds], description)


def _dicom_scan(files: list[ReceivedFile], budget: PixelBudget) -> Scan:
    from dxkit.io.dicom import decode_dataset, sort_series

    images, headers = [], []
    for f in files:
        ds = _open_dicom(f, budget)
        images.append(decode_dataset(ds, f.path))
        del ds.PixelData  # keep the header (for DICOM output), drop the pixel bytes
        headers.append(ds)
    first = images[0].meta
    modality = first.get("Modality")
    hounsfield = modality == "CT" and not any(im.meta.get("rescale_missing") for im in images)
    from dxkit.preprocess.window import file_windows

    windows = file_windows(first)

    description = str(headers[0].get("SeriesDescription") or "").strip() or None

    def scan(kind: ScanKind, array: np.ndarray, files: int, dicoms: list[Any]) -> Scan:
        return Scan(kind, {"scan": array}, files, hounsfield, modality, windows, dicoms,
                    description)  # fmt: skip

    if len(images) == 1:
        pixels = images[0].pixels
        if int(first.get("SamplesPerPixel", 1)) > 1:
            return scan("dicom", pixels, 1, headers)
        return scan("dicom", pixels[None], 1, headers)
    uids = {str(im.meta.get("SeriesInstanceUID", "unknown")) for im in images}
    if len(uids) > 1:
        raise RequestError(
            f"the {len(images)} DICOM files belong to {len(uids)} different series; upload "
            "one series at a time",
            400,
        )
    if any(im.pixels.ndim != 2 for im in images):
        raise RequestError(
            "a series of multi-frame or colour DICOM files is not supported; send one file", 422
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ordering by InstanceNumber is acceptable here
        series = sort_series(uids.pop(), images)
    order = {id(im): i for i, im in enumerate(images)}
    headers = [headers[order[id(im)]] for im in series.images]
    return scan("series", series.volume()[None], len(images), headers)


def _exam_scan(planes: dict[str, ReceivedFile], budget: PixelBudget) -> Scan:
    arrays = {}
    for plane in PLANE_FIELDS:
        if plane not in planes:
            raise RequestError(
                f"an exam needs all three planes; {plane} is missing (send axial, coronal "
                "and sagittal .npy files)",
                400,
            )
        f = planes[plane]
        if f.kind != "npy":
            raise RequestError(f"{plane} ({f.client}): exam planes must be .npy stacks", 415)
        array = _read_npy(f, budget)
        if array.ndim != 3:
            raise RequestError(
                f"{plane} ({f.client}): shape {array.shape}; a plane is a (slices, H, W) stack",
                422,
            )
        arrays[plane] = array[None]
    return Scan("exam", arrays, 3)


def _plane_of(name: str) -> str | None:
    hits = [p for p in PLANE_FIELDS if p in name.lower()]
    return hits[0] if len(hits) == 1 else None


def _assemble(
    files: list[ReceivedFile],
    planes: dict[str, ReceivedFile],
    budget: PixelBudget,
    radiograph: str | None = None,
) -> Scan:
    if planes:
        if files:
            raise RequestError(
                "send either the exam's plane fields (axial, coronal, sagittal) or files, not both"
            )
        return _exam_scan(planes, budget)
    if not files:
        raise RequestError(f"no file was uploaded; send one scan ({ACCEPTED})")
    kinds = {f.kind for f in files}
    if len(kinds) > 1:
        raise RequestError(
            f"the upload mixes file types ({', '.join(sorted(kinds))}); send one scan: one "
            "image, or the DICOM files of one series, or one exam"
        )
    kind = kinds.pop()
    if kind == "raster":
        if len(files) > 1:
            raise RequestError(f"{len(files)} images were sent; send one image at a time")
        return Scan("image", {"scan": _read_raster(files[0], budget)}, 1)
    if kind == "npy":
        named = {_plane_of(f.client): f for f in files}
        if len(files) == 3 and set(named) == set(PLANE_FIELDS):
            return _exam_scan(named, budget)  # type: ignore[arg-type]
        if len(files) > 1:
            raise RequestError(
                f"{len(files)} .npy files were sent; send one array, or an exam's three planes "
                "as the axial, coronal and sagittal fields (or with the plane in each name)"
            )
        array = _read_npy(files[0], budget)
        return Scan("array", {"scan": _as_channel_first(array)}, 1)
    if radiograph is not None:
        return _radiograph_scan(files, budget, radiograph)
    return _dicom_scan(files, budget)


def read_upload(
    files: list[tuple[str, IO[bytes]]],
    planes: dict[str, tuple[str, IO[bytes]]],
    limits: Limits,
    workdir: Path,
    radiograph: str | None = None,
) -> Scan:
    """Parse one request's uploads (``(client name, stream)`` pairs; ``planes`` for an
    exam's axial/coronal/sagittal fields) into a ``Scan``, in the private ``workdir``;
    with ``radiograph`` (a scaling), a DICOM is read as a radiograph for a segmenter."""
    if len(files) > limits.max_files:
        raise RequestError(
            f"{len(files)} files in one request, over the limit of {limits.max_files}; zip them "
            "or send fewer",
            413,
        )
    local: list[ReceivedFile] = []
    by_plane: dict[str, ReceivedFile] = {}
    try:
        for n, (client, stream) in enumerate(files, start=1):
            f = _receive(stream, client or f"file {n}", workdir / f"file-{n}", limits)
            if f.kind == "zip":
                local.extend(extract_zip(f.path, f.client, workdir, limits, start=1000 * n))
                f.path.unlink()
            else:
                local.append(f)
        for plane, (client, stream) in planes.items():
            f = _receive(stream, client or plane, workdir / f"plane-{plane}", limits)
            by_plane[plane] = f
        return _assemble(local, by_plane, PixelBudget(limits.max_pixels), radiograph)
    except RequestError as err:
        message = _client_message(err, [*local, *by_plane.values()])
        raise RequestError(message, err.status) from None
    except (InvalidScanError, UnsupportedFormatError) as err:
        status = 415 if isinstance(err, UnsupportedFormatError) else 422
        message = _client_message(err, [*local, *by_plane.values()])
        raise RequestError(message, status) from None
    except DECODER_ERRORS as err:
        # Third-party decoders (pydicom's handlers, Pillow) raise this zoo on malformed
        # input; any of them here means the upload, not the server, is broken. Their text
        # is Python's, not the user's: it is replaced by plain words (the type is logged).
        log.info("upload unreadable: %s", type(err).__name__)
        received = [*local, *by_plane.values()]
        raise RequestError(unreadable_message(err, received), 422) from None


DECODER_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OSError,
    EOFError,
    struct.error,
    NotImplementedError,
    RuntimeError,
)


def unreadable_message(err: BaseException, files: list[ReceivedFile]) -> str:
    """A decoder's failure in plain words, naming the client's file(s)."""
    names = sorted({f.client for f in files})
    what = names[0] if len(names) == 1 else f"one of the {len(names)} files"
    if isinstance(err, EOFError | struct.error) or "truncat" in str(err).lower():
        why = "ends before its image data does (truncated?)"
    elif isinstance(err, NotImplementedError):
        why = "uses an encoding this server cannot decode; export it uncompressed"
    else:
        why = "is damaged, or its header does not match its image data"
    return f"the upload cannot be read: {what} {why}; send an intact copy"


def remove_workdir(workdir: Path) -> None:
    """Delete the request's private folder and everything in it."""
    shutil.rmtree(workdir, ignore_errors=True)

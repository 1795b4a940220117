"""Read DICOM files and series: pixels in modality units (HU for CT) plus PHI-free metadata.

pydicom does the parsing and decoding (compressed transfer syntaxes through its installed
pylibjpeg / Pillow plugins); this module turns its many failure modes into ``dxkit.errors``
that name the file, applies the modality LUT (with the RSNA bad-intercept repair) and
MONOCHROME1 inversion, and sorts series by position along the slice normal.

Note on layering: the HU arithmetic lives in ``dxkit.preprocess.hu`` (NumPy only, no dxkit
imports) so the reader and the preprocessing share one definition of Hounsfield units.
"""

from __future__ import annotations

import functools
import logging
import struct
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.tag import Tag

from dxkit.errors import InvalidScanError, MissingFileError, UnsupportedFormatError
from dxkit.preprocess.hu import invert_monochrome1, to_hounsfield

logger = logging.getLogger(__name__)

# Tags kept in ``DicomImage.meta``: what a study needs, no patient identity. PatientID is kept
# as the (usually pseudonymous) grouping key; exporters may hash it. Dates, names, addresses,
# institutions and physicians are never read into metadata.
META_KEYWORDS: tuple[str, ...] = (
    "SOPInstanceUID",
    "SOPClassUID",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "KVP",
    "NumberOfFrames",
)
# PHI keywords an explicit --keep-phi export may add.
PHI_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientAddress",
    "OtherPatientIDs",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
)


_META_TAGS = [(kw, Tag(kw)) for kw in META_KEYWORDS]


# What decoding and the modality LUT read from ``meta``: kept whatever ``keywords`` says.
PIXEL_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "NumberOfFrames",
)


@functools.lru_cache(maxsize=32)
def _tags(keywords: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [(kw, Tag(kw)) for kw in dict.fromkeys(keywords)]


class DicomWarning(UserWarning):
    """A DICOM file was read, but with an assumption the user should know about."""


@dataclass
class DicomImage:
    """One decoded DICOM image.

    ``pixels`` is float32 in modality units (Hounsfield units for CT): ``(H, W)`` for a
    grey single frame, ``(F, H, W)`` for multi-frame, ``(3, H, W)`` for colour.
    ``meta`` holds plain-Python values of ``META_KEYWORDS`` present in the file plus
    ``TransferSyntaxUID``, ``hu_repaired`` and ``rescale_missing``.
    """

    pixels: np.ndarray
    meta: dict[str, Any]
    path: Path


@dataclass
class Series:
    """The slices of one SeriesInstanceUID in patient order (along the slice normal)."""

    series_uid: str
    images: list[DicomImage]
    positions: np.ndarray  # (D,) distance along the slice normal, mm; NaN when unknown
    sorted_by: Literal["position", "instance_number"]
    warnings: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [im.path for im in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def volume(self) -> np.ndarray:
        """Slices stacked as a float32 ``(D, H, W)`` volume."""
        return np.stack([im.pixels for im in self.images]).astype(np.float32, copy=False)


@contextmanager
def lenient_values() -> Iterator[None]:
    """Read element values without pydicom's per-value validation warnings.

    Anonymised collections (RSNA) put 'ID_xxx' into UI fields; pydicom would warn and log
    once per value and file. We validate what we use ourselves, so silence it while reading.
    """
    saved = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        pydicom_config.settings.reading_validation_mode = saved


def plain(value: Any) -> Any:
    """A pydicom element value as plain Python (float/int/str or a list of them)."""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal | float):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS | int):
        return int(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def dataset_meta(ds: Dataset, keywords: Iterable[str] = META_KEYWORDS) -> dict[str, Any]:
    """The given tags of ``ds`` as plain Python, skipping absent or empty ones."""
    meta: dict[str, Any] = {}
    tags = _META_TAGS if keywords is META_KEYWORDS else _tags(tuple(keywords))
    with lenient_values():
        for kw, tag in tags:
            try:
                value = ds[tag].value  # one lookup (``tag in ds`` first would be two)
            except KeyError:
                continue
            if value is None or value == "":
                continue
            meta[kw] = plain(value)
    tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsuid is not None:
        meta["TransferSyntaxUID"] = str(tsuid)
    return meta


def open_dataset(path: Path | str, *, stop_before_pixels: bool = False) -> Dataset:
    """``pydicom.dcmread`` with errors mapped to ``dxkit.errors`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such DICOM file; check the path")
    try:
        with lenient_values():
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise InvalidScanError(
            f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble); "
            "remove it from the folder or convert it"
        ) from exc
    except (EOFError, struct.error, OSError, ValueError, KeyError, IndexError) as exc:
        raise InvalidScanError(
            f"{path}: truncated or corrupt DICOM header ({type(exc).__name__}: {exc}); "
            "re-export or re-download the file"
        ) from exc


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """The stored pixel values of ``ds`` as decoded by pydicom's installed handlers."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InvalidScanError(
            f"{path}: has no PixelData (7FE0,0010); it is not an image "
            f"(SOPClassUID {ds.get('SOPClassUID', 'unknown')}) — leave it out"
        )
    tsuid = ds.file_meta.get("TransferSyntaxUID", "unknown")
    try:
        return ds.pixel_array
    except NotImplementedError as exc:
        raise UnsupportedFormatError(
            f"{path}: no installed pixel handler decodes transfer syntax {tsuid} "
            f"({getattr(tsuid, 'name', tsuid)}); install one that does (pylibjpeg, "
            f"pylibjpeg-libjpeg/-openjpeg, pyjpegls, python-gdcm) or decompress the file"
        ) from exc
    except RuntimeError as exc:
        if "plugin" in str(exc).lower() or "unable to decode" in str(exc).lower():
            raise UnsupportedFormatError(
                f"{path}: cannot decode transfer syntax {tsuid} "
                f"({getattr(tsuid, 'name', tsuid)}): {exc}"
            ) from exc
        raise InvalidScanError(f"{path}: pixel data cannot be decoded: {exc}") from exc
    except (ValueError, EOFError, struct.error, OSError, AttributeError, KeyError) as exc:
        raise InvalidScanError(
            f"{path}: truncated or corrupt pixel data ({exc}); re-export or re-download the file"
        ) from exc


# Uncompressed little-endian syntaxes, whose pixels NumPy can view without pydicom's decoder.
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _native_view(ds: Dataset, meta: dict[str, Any]) -> np.ndarray | None:
    """Stored grey values of an uncompressed little-endian file, straight from the bytes.

    ``ds.pixel_array`` runs pydicom's general decoder, ~1.5 ms of a 512² slice's
    preparation (as much as parsing the file); for the plain case the values are the bytes
    themselves, so we view them and apply the same unused-bit correction pydicom applies
    (a test checks equality with ``pixel_array``). ``meta`` holds the already converted
    tags (``PIXEL_KEYWORDS``). Any other layout returns None.
    """
    if meta.get("TransferSyntaxUID") not in _NATIVE_LE or "PixelData" not in ds:
        return None
    try:
        rows, cols = int(meta["Rows"]), int(meta["Columns"])
        allocated, stored_bits = int(meta["BitsAllocated"]), int(meta["BitsStored"])
        signed = int(meta["PixelRepresentation"]) == 1
        samples = int(meta.get("SamplesPerPixel", 1))
        frames = int(meta.get("NumberOfFrames", 1))
    except (KeyError, TypeError, ValueError):
        return None
    if samples != 1 or allocated not in (8, 16, 32) or not 0 < stored_bits <= allocated:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = rows * cols * frames
    data = ds.PixelData
    if not isinstance(data, bytes | bytearray) or len(data) < count * dtype.itemsize:
        return None  # truncated: pydicom's decoder names the problem
    array = np.frombuffer(data, dtype=dtype, count=count)
    array = array.reshape((rows, cols) if frames == 1 else (frames, rows, cols))
    if stored_bits < allocated:  # pydicom's correction: drop (or sign-extend) high bits
        if signed:
            shift = allocated - stored_bits
            array = np.right_shift(np.left_shift(array, shift), shift)
        else:  # the same as the two shifts for unsigned values, in one pass
            array = np.bitwise_and(array, np.array((1 << stored_bits) - 1, dtype=dtype))
    return array


def stored_pixels(ds: Dataset, path: Path | str, meta: dict[str, Any]) -> np.ndarray:
    """The stored pixel values of ``ds`` (possibly a read-only view): the NumPy view of
    uncompressed grey data, else pydicom's decoders (with dxkit errors naming the file).
    ``meta`` is ``dataset_meta(ds, ...)`` including ``PIXEL_KEYWORDS``."""
    array = _native_view(ds, meta)
    return array if array is not None else _decode(ds, Path(path))


def check_pixel_data(ds: Dataset, path: Path | str) -> None:
    """Cheap integrity check without decoding: PixelData present, a decoder installed for
    the transfer syntax, and (uncompressed) the byte count the header promises."""
    path = Path(path)
    if "PixelData" not in ds:
        _decode(ds, path)  # raises the 'no PixelData' error
    tsuid = ds.file_meta.get("TransferSyntaxUID")
    try:
        decoder = get_decoder(tsuid)
    except (NotImplementedError, ValueError) as exc:
        raise UnsupportedFormatError(
            f"{path}: no pixel decoder exists for transfer syntax {tsuid}: {exc}"
        ) from exc
    if not decoder.is_available:
        raise UnsupportedFormatError(
            f"{path}: transfer syntax {tsuid} ({tsuid.name}) needs one of "
            f"{decoder.missing_dependencies}; install it or decompress the file"
        )
    if decoder.is_native:
        frames = int(ds.get("NumberOfFrames") or 1)
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * frames
            * int(ds.get("SamplesPerPixel", 1))
            * int(ds.BitsAllocated)
            // 8
        )
        actual = len(ds.PixelData)
        if actual < expected:
            raise InvalidScanError(
                f"{path}: truncated pixel data ({actual} of {expected} bytes); "
                "re-export or re-download the file"
            )


def _modality_units(
    ds: Dataset, stored: np.ndarray, meta: dict[str, Any], path: Path
) -> np.ndarray:
    """Stored values → modality units: MONOCHROME1 inversion, then slope/intercept."""
    bits = int(meta.get("BitsStored", stored.dtype.itemsize * 8))
    signed = int(meta.get("PixelRepresentation", 0)) == 1
    if meta.get("PhotometricInterpretation") == "MONOCHROME1":
        stored = invert_monochrome1(stored, bits_stored=bits, signed=signed)
    slope, intercept = meta.get("RescaleSlope"), meta.get("RescaleIntercept")
    meta["rescale_missing"] = slope is None or intercept is None
    # Radiographs (CR/DX/MG) normally carry no rescale; for CT it means raw values, not HU.
    if meta["rescale_missing"] and "ModalityLUTSequence" not in ds and meta.get("Modality") == "CT":
        warnings.warn(
            f"{path}: RescaleSlope/RescaleIntercept missing; using 1 and 0 (values stay raw)",
            DicomWarning,
            stacklevel=3,
        )
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        meta["hu_repaired"] = False
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    result = to_hounsfield(
        stored,
        slope=1.0 if slope is None else float(slope),
        intercept=0.0 if intercept is None else float(intercept),
        pixel_representation=int(meta.get("PixelRepresentation", 0)),
        bits_stored=bits,
        modality=meta.get("Modality"),
    )
    meta["hu_repaired"] = result.repaired
    if result.repaired:
        logger.info("%s: repaired RSNA bad intercept (12-bit, intercept %s)", path.name, intercept)
    return result.hu


def decode_dataset(
    ds: Dataset, path: Path | str, keywords: Iterable[str] = META_KEYWORDS
) -> DicomImage:
    """An already-open dataset → ``DicomImage`` (used by readers that parse once).

    ``keywords`` chooses the tags kept in ``meta`` (those the pixels need are always read).
    """
    path = Path(path)
    if keywords is not META_KEYWORDS:
        keywords = (*PIXEL_KEYWORDS, *keywords)
    meta = dataset_meta(ds, keywords)
    stored = stored_pixels(ds, path, meta)
    if int(meta.get("SamplesPerPixel", 1)) > 1:
        if stored.ndim != 3:
            raise UnsupportedFormatError(f"{path}: multi-frame colour DICOM is not supported")
        meta["rescale_missing"], meta["hu_repaired"] = False, False
        pixels = np.moveaxis(stored, -1, 0).astype(np.float32)
    else:
        pixels = _modality_units(ds, stored, meta, path)
    if stored.dtype.kind == "f" and not np.isfinite(pixels).all():  # integers stay finite
        raise InvalidScanError(f"{path}: pixel data holds NaN or infinite values")
    return DicomImage(pixels=pixels, meta=meta, path=path)


def read_dicom(path: Path | str, keywords: Iterable[str] = META_KEYWORDS) -> DicomImage:
    """Read one DICOM file into float32 modality units (HU for CT) and PHI-free metadata.

    ``keywords`` (default ``META_KEYWORDS``) are the tags kept in ``meta``; a caller that
    needs fewer (the slice cache) saves their conversion, ~30 µs per tag in pydicom.
    """
    path = Path(path)
    return decode_dataset(open_dataset(path), path, keywords)


def slice_position(meta: dict[str, Any]) -> float | None:
    """Distance along the slice normal: ImagePositionPatient · (row × column direction)."""
    ipp, iop = meta.get("ImagePositionPatient"), meta.get("ImageOrientationPatient")
    if not isinstance(ipp, list) or not isinstance(iop, list) or len(ipp) != 3 or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
        return None
    return float(np.dot(np.asarray(ipp, dtype=float), normal))


def _expand(source: Path | str | Iterable[Path | str]) -> list[Path]:
    if isinstance(source, str | Path):
        root = Path(source)
        if root.is_dir():
            return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not root.exists():
            raise MissingFileError(f"{root}: no such file or folder of DICOM files")
        return [root]
    return [Path(p) for p in source]


def sort_series(series_uid: str, images: list[DicomImage]) -> Series:
    """Order one series' images along the slice normal; InstanceNumber when positions are absent."""
    positions = [slice_position(im.meta) for im in images]
    notes: list[str] = []
    if all(p is not None for p in positions) and len(set(positions)) == len(positions):
        order = sorted(range(len(images)), key=lambda i: positions[i])  # type: ignore[arg-type, return-value]
        by: Literal["position", "instance_number"] = "position"
    else:
        note = (
            f"series {series_uid}: ImagePositionPatient/ImageOrientationPatient missing or "
            "duplicated; ordering slices by InstanceNumber"
        )
        warnings.warn(note, DicomWarning, stacklevel=3)
        notes.append(note)
        order = sorted(
            range(len(images)), key=lambda i: (images[i].meta.get("InstanceNumber", 0), i)
        )
        by = "instance_number"
    shapes = Counter(images[i].pixels.shape for i in order)
    if len(shapes) > 1:
        common = shapes.most_common(1)[0][0]
        odd = [f"{im.path.name} {im.pixels.shape}" for im in images if im.pixels.shape != common]
        raise InvalidScanError(
            f"series {series_uid}: inconsistent slice sizes; most are {common} but "
            f"{', '.join(odd)}; remove or resample those files"
        )
    pos = np.array([np.nan if positions[i] is None else positions[i] for i in order], dtype=float)
    return Series(series_uid, [images[i] for i in order], pos, by, notes)


def read_series(
    source: Path | str | Iterable[Path | str], *, skip_unreadable: bool = False
) -> list[Series]:
    """Read a folder (recursively) or list of files into series, each in patient order.

    Files are grouped by SeriesInstanceUID. With ``skip_unreadable`` a file that cannot be
    read is logged and left out; otherwise the first such file raises.
    """
    groups: dict[str, list[DicomImage]] = defaultdict(list)
    for path in _expand(source):
        try:
            image = read_dicom(path)
        except (InvalidScanError, UnsupportedFormatError) as exc:
            if not skip_unreadable:
                raise
            logger.warning("skipping %s", exc)
            continue
        groups[str(image.meta.get("SeriesInstanceUID", "unknown"))].append(image)
    return [sort_series(uid, images) for uid, images in groups.items()]

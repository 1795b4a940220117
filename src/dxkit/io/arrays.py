"""Read NumPy ``.npy`` / ``.npz`` files safely (no pickles) and validate what comes out."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dxkit.errors import DataSourceError, InvalidScanError, MissingFileError


def validate_array(
    array: np.ndarray, path: Path | str, *, ndims: Iterable[int] = (2, 3, 4)
) -> None:
    """Raise ``InvalidScanError`` naming ``path`` unless ``array`` is numeric, finite, N-D."""
    ndims = tuple(ndims)
    if array.dtype.kind not in "biuf":
        raise InvalidScanError(
            f"{path}: array dtype {array.dtype} is not numeric; save images as integers or floats"
        )
    if array.ndim not in ndims:
        raise InvalidScanError(
            f"{path}: array has shape {array.shape} ({array.ndim}-D); expected {ndims}-D"
        )
    if 0 in array.shape:
        raise InvalidScanError(f"{path}: array has an empty axis, shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InvalidScanError(f"{path}: array holds {bad} NaN/infinite values; fix or mask them")


def _load(path: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file; check the path")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InvalidScanError(
                f"{path}: holds pickled Python objects, which dxkit refuses to load; "
                "save plain numeric arrays"
            ) from exc
        raise InvalidScanError(f"{path}: not a readable NumPy file ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidScanError(f"{path}: truncated or corrupt NumPy file ({exc})") from exc


def read_npy(path: Path | str, *, ndims: Iterable[int] = (2, 3, 4)) -> np.ndarray:
    """One validated array from a ``.npy`` file (or the single array of a ``.npz``)."""
    path = Path(path)
    loaded = _load(path)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            if len(keys) != 1:
                raise InvalidScanError(
                    f"{path}: .npz holds {len(keys)} arrays {keys}; a scan file must hold "
                    "exactly one (use read_npz for dataset files)"
                )
            try:
                array = loaded[keys[0]]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InvalidScanError(f"{path}: array {keys[0]!r} unreadable ({exc})") from exc
    else:
        array = loaded
    validate_array(array, path, ndims=ndims)
    return array


def read_npz(path: Path | str, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """All (or the named) arrays of a ``.npz`` file; a missing key is a ``DataSourceError``."""
    path = Path(path)
    loaded = _load(path)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InvalidScanError(f"{path}: is a single .npy array, not an .npz archive")
    with loaded:
        wanted = list(keys) if keys is not None else list(loaded.files)
        missing = [k for k in wanted if k not in loaded.files]
        if missing:
            raise DataSourceError(
                f"{path}: missing arrays {missing}; it holds {sorted(loaded.files)}"
            )
        out: dict[str, np.ndarray] = {}
        for key in wanted:
            try:
                out[key] = loaded[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InvalidScanError(f"{path}: array {key!r} unreadable ({exc})") from exc
    return out

"""Load pickled NumPy arrays from untrusted files without running the pickle's code.

Some public collections (kneeMRI, Štajduhar et al. 2017) ship volumes as pickles. A pickle
is a program: ``pickle.load`` calls any importable function it names (``os.system``,
``builtins.eval``...). ``ArrayUnpickler`` only lets a pickle name the few NumPy callables
that rebuild a plain numeric array, each wrapped to check its arguments, and refuses
everything else with ``InvalidScanError`` before it runs. Python and NumPy offer no such
restricted loader, hence this module.
"""

from __future__ import annotations

import _codecs
import io
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from dxkit.errors import InvalidScanError, MissingFileError

# Plain numeric dtypes only: bool, signed/unsigned ints, floats. No object ('O') or void ('V')
# dtypes, whose pickled state could mark raw bytes as Python object pointers.
_NUMERIC_DTYPE = re.compile(r"^[<>|=]?(b1|bool|[iu][1248]|f[248])$")
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")

try:  # NumPy >= 2 renamed numpy.core to numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.26
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _numeric_dtype(spec: Any, *args: Any) -> np.dtype:
    if not isinstance(spec, str) or not _NUMERIC_DTYPE.match(spec):
        raise InvalidScanError(f"pickle asks for dtype {spec!r}; only numeric dtypes are allowed")
    return np.dtype(spec, *args[:2])


def _check_dtype(dtype: Any) -> None:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or dtype.hasobject:
        raise InvalidScanError(f"pickle holds dtype {dtype!r}; only numeric arrays are allowed")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    # NumPy always pickles an ndarray as _reconstruct(ndarray, (0,), b'b') + __setstate__;
    # any other shape would only serve to allocate memory the file does not hold.
    if subtype is not np.ndarray or typecode not in (b"b", "b") or tuple(shape) != (0,):
        raise InvalidScanError(
            f"pickle rebuilds {subtype!r} with shape {shape!r}, typecode {typecode!r}; "
            "only plain ndarrays are allowed"
        )
    return cast(np.ndarray, _multiarray._reconstruct(np.ndarray, (0,), typecode))


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _check_dtype(dtype)
    rebuilt: np.ndarray = _numeric._frombuffer(buf, dtype, shape, order)  # type: ignore[attr-defined]
    return rebuilt


def _scalar(dtype: Any, data: Any = None) -> Any:
    _check_dtype(dtype)
    return _multiarray.scalar(dtype, data)


def _latin1_encode(text: Any, encoding: Any = "latin1", *args: Any) -> bytes:
    # Protocol 0-2 pickles written by Python 3 carry bytes as _codecs.encode(str, 'latin1').
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str) or args:
        raise InvalidScanError(f"pickle calls _codecs.encode with encoding {encoding!r}; refused")
    return _codecs.encode(text, "latin1")


def _empty_bytes(*args: Any) -> bytes:
    # Protocol 0-2 pickles write an empty array's data as bytes(); bytes(n) would allocate.
    if args:
        raise InvalidScanError(f"pickle calls bytes{args!r}; only bytes() is allowed")
    return b""


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY_CORE},
    **{(m, "scalar"): _scalar for m in _NUMPY_CORE},
    **{(m, "_frombuffer"): _frombuffer for m in _NUMPY_NUMERIC},
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild plain numeric NumPy arrays (and scalars)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise InvalidScanError(
                f"pickle wants to load {module}.{name}; refused — only NumPy arrays may be "
                "unpickled from data files (the file may be malicious or not a volume)"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise InvalidScanError("pickle uses persistent ids; refused")


def loads_array(data: bytes, source: str = "pickle") -> np.ndarray:
    """Unpickle ``data`` that must hold exactly one numeric ``np.ndarray``."""
    try:
        # latin1 turns Python 2 byte strings (old NumPy pickles) back into raw bytes.
        obj = ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except InvalidScanError as exc:
        raise InvalidScanError(f"{source}: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidScanError(
            f"{source}: not a readable NumPy pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, np.ndarray) or type(obj) is not np.ndarray:
        raise InvalidScanError(
            f"{source}: pickle holds {type(obj).__name__}, expected a NumPy array of the volume"
        )
    if obj.dtype.kind not in "biuf" or obj.dtype.hasobject:
        raise InvalidScanError(f"{source}: pickled array has non-numeric dtype {obj.dtype}")
    return obj


def load_array_pickle(path: Path | str) -> np.ndarray:
    """Read a pickled NumPy array from ``path`` with ``ArrayUnpickler`` (never plain pickle)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such pickled volume; check the path")
    return loads_array(path.read_bytes(), source=str(path))

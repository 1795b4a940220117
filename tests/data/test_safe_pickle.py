"""The restricted unpickler: real NumPy pickles load, anything that runs code is refused."""

from __future__ import annotations

import builtins
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from dxkit.data.safe_pickle import ArrayUnpickler, load_array_pickle, loads_array
from dxkit.errors import InvalidScanError, MissingFileError


def py2_numpy_pickle(a: np.ndarray) -> bytes:
    """A protocol-2 pickle laid out as Python 2 + NumPy 1.x wrote them (kneeMRI's era):
    ``numpy.core.multiarray._reconstruct`` and raw bytes as BINSTRING, not _codecs.encode."""

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def i(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    a = np.ascontiguousarray(a)
    order, code = a.dtype.str[0], a.dtype.str[1:]
    out = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    out += i(0) + b"\x85" + s(b"b") + b"\x87R"
    out += b"(" + i(1) + b"(" + b"".join(i(d) for d in a.shape) + b"t"
    out += b"cnumpy\ndtype\n" + s(code.encode()) + i(0) + i(1) + b"\x87R"
    out += b"(" + i(3) + s(order.encode()) + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
    return out + b"\x89" + s(a.tobytes()) + b"tb."


@pytest.mark.parametrize(
    "dtype", ["uint8", "<u2", ">i2", "int32", "int64", "float32", "<f8", "bool"]
)
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_numpy_arrays_of_several_dtypes_load_like_plain_pickle(dtype: str, protocol: int) -> None:
    a = (np.arange(2 * 3 * 5).reshape(2, 3, 5) % 7).astype(dtype)
    data = pickle.dumps(a, protocol=protocol)
    got = loads_array(data)
    reference = pickle.loads(data)  # our own trusted bytes: plain pickle is the reference
    assert type(got) is np.ndarray
    assert got.dtype == reference.dtype and got.shape == (2, 3, 5)
    np.testing.assert_array_equal(got, a)


def test_fortran_order_and_non_contiguous_arrays_load() -> None:
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(loads_array(pickle.dumps(a, protocol=2)), a)
    b = np.arange(10.0)[::3]
    np.testing.assert_array_equal(loads_array(pickle.dumps(b, protocol=5)), b)


@pytest.mark.parametrize("dtype", ["<u2", "<i2", "<f4", "|u1"])
def test_python2_era_pickles_load(dtype: str) -> None:
    a = (np.arange(4 * 6 * 6).reshape(4, 6, 6) * 37 % 4096).astype(dtype)
    data = py2_numpy_pickle(a)
    np.testing.assert_array_equal(pickle.loads(data, encoding="latin1"), a)  # well-formed
    got = loads_array(data)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, a)


class _RunsShell:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.target}",))


class _RunsEval:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (builtins.eval, (f"open({str(self.target)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("payload", [_RunsShell, _RunsEval])
def test_malicious_pickle_is_refused_and_its_code_never_runs(payload: type, tmp_path: Path) -> None:
    control, target = tmp_path / "control", tmp_path / "target"
    # Control: plain pickle really would run it (so the payload is a real attack).
    pickle.loads(pickle.dumps(payload(control)))
    assert control.exists()

    evil = tmp_path / "evil.pck"
    evil.write_bytes(pickle.dumps(payload(target), protocol=2))
    with pytest.raises(InvalidScanError, match=r"evil\.pck.*refused"):
        load_array_pickle(evil)
    assert not target.exists()


def test_malicious_call_hidden_inside_an_array_state_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    # The shell call sits where the array's raw bytes belong.
    good = pickle.dumps(np.zeros(3, np.uint8), protocol=2)
    evil = good.replace(b"c_codecs\nencode\n", pickle.dumps(_RunsShell(target), protocol=2)[2:-1])
    with pytest.raises(InvalidScanError, match="refused"):
        loads_array(evil)
    assert not target.exists()


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (np.array([1, "a"], dtype=object), "dtype 'O8'"),
        (np.zeros(3, dtype="V8"), "dtype 'V8'"),
        (np.zeros(2, dtype=[("a", "<i4"), ("b", "<f4")]), "dtype"),
        (np.array(["knee"]), "dtype"),
        ({"volume": np.zeros(3)}, "builtins|holds dict"),
        ([1, 2, 3], "holds list"),
        (np.float64(3.0), "holds float64"),
        (np.ma.masked_array(np.zeros(3)), "refused"),
    ],
)
def test_anything_but_a_plain_numeric_array_is_refused(obj: object, match: str) -> None:
    with pytest.raises(InvalidScanError, match=match):
        loads_array(pickle.dumps(obj, protocol=2))


def test_object_flags_smuggled_into_a_void_dtype_are_refused() -> None:
    # A V8 dtype whose pickled state sets NPY_ITEM_HASOBJECT would make NumPy read raw bytes
    # as object pointers; the dtype constructor is refused before its state is applied.
    data = pickle.dumps(np.zeros(2, dtype="V8"), protocol=2).replace(b"K\x00tq", b"K?tq")
    assert b"K?tq" in data  # flags 63 = object-holding
    with pytest.raises(InvalidScanError, match="V8"):
        loads_array(data)


def test_garbage_truncated_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidScanError, match="not a readable NumPy pickle"):
        loads_array(b"\x93NUMPY this is an npy header, not a pickle")
    good = pickle.dumps(np.arange(100, dtype=np.int16), protocol=2)
    with pytest.raises(InvalidScanError, match="not a readable"):
        loads_array(good[: len(good) // 2])
    with pytest.raises(MissingFileError, match=r"nowhere\.pck"):
        load_array_pickle(tmp_path / "nowhere.pck")


def test_unpickler_is_a_pickle_unpickler_subclass() -> None:
    assert issubclass(ArrayUnpickler, pickle.Unpickler)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_empty_arrays_load(protocol: int) -> None:
    got = loads_array(pickle.dumps(np.zeros((0, 4), np.uint16), protocol=protocol))
    assert got.shape == (0, 4) and got.dtype == np.uint16


def test_bytes_can_only_be_called_empty() -> None:
    # bytes(10**12) would allocate a terabyte: the allowed bytes() takes no argument.
    data = pickle.dumps(np.zeros((0, 4), np.uint16), protocol=2)
    evil = data.replace(b"bytes\nq\x11)R", b"bytes\nq\x11J\x00\x00\x00\x7f\x85R")
    assert evil != data
    with pytest.raises(InvalidScanError, match="only bytes\\(\\) is allowed"):
        loads_array(evil)

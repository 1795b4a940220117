"""The NumPy view of uncompressed pixels (``stored_pixels``) equals pydicom's ``pixel_array``.

The fast path skips pydicom's decoder for uncompressed little-endian grey data; these tests
hold it to the decoder's values, dtype and unused-bit correction, on the 100 real RSNA
files and on generated files whose bits above BitsStored carry garbage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dxkit.data.synthetic import head_phantom, write_ct_slice
from dxkit.io.dicom import (
    META_KEYWORDS,
    PIXEL_KEYWORDS,
    _native_view,
    dataset_meta,
    read_dicom,
    stored_pixels,
)
from dxkit.preprocess.hu import to_hounsfield

IDS = {"patient_id": "P1", "study_uid": "1.2.3", "series_uid": "1.2.3.4"}


def _both(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    ds = pydicom.dcmread(path)
    meta = dataset_meta(ds, PIXEL_KEYWORDS)
    view = _native_view(ds, meta)
    return stored_pixels(ds, path, meta), pydicom.dcmread(path).pixel_array, view


def test_real_rsna_files_decode_as_pydicom_does(rsna_dir: Path) -> None:
    files = sorted(rsna_dir.glob("*.dcm"))
    assert len(files) == 100
    kinds = set()
    for path in files:
        ours, reference, view = _both(path)
        assert view is not None  # all 100 are uncompressed little endian: the fast path ran
        assert ours.dtype == reference.dtype and ours.shape == reference.shape
        np.testing.assert_array_equal(ours, reference)
        kinds.add((str(ours.dtype), int(pydicom.dcmread(path).BitsStored)))
    assert kinds == {("int16", 16), ("uint16", 12)}  # both RSNA encodings were checked


def test_real_rsna_hounsfield_units_match_the_decoder_route(rsna_dir: Path) -> None:
    for path in sorted(rsna_dir.glob("*.dcm"))[:40]:
        ds = pydicom.dcmread(path)
        expected = to_hounsfield(
            ds.pixel_array,
            slope=float(ds.RescaleSlope),
            intercept=float(ds.RescaleIntercept),
            pixel_representation=int(ds.PixelRepresentation),
            bits_stored=int(ds.BitsStored),
        ).hu
        for keywords in (META_KEYWORDS, ("PatientID",)):
            np.testing.assert_array_equal(read_dicom(path, keywords).pixels, expected)


def _garbage_high_bits(path: Path, bits_stored: int, signed: bool, syntax: str) -> np.ndarray:
    """Rewrite a file's pixels: random ``bits_stored``-bit values (negative ones too when
    ``signed``) with random garbage in the unused top bits. Returns the true values."""
    ds = pydicom.dcmread(path)
    rng = np.random.default_rng(3)
    shape = (int(ds.Rows), int(ds.Columns))
    half = 1 << (bits_stored - 1)
    values = rng.integers(-half if signed else 0, half if signed else 2 * half, shape)
    raw = values.astype(np.int64) & ((1 << bits_stored) - 1)  # two's complement, 12 bits
    raw |= rng.integers(0, 1 << (16 - bits_stored), shape) << bits_stored
    ds.PixelData = raw.astype("<u2").tobytes()
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    return values


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned12", "signed12"])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_unused_high_bits_are_dropped_like_pydicom(tmp_path: Path, signed: bool, syntax) -> None:
    hu, _ = head_phantom(48, np.random.default_rng(1))
    encoding = "signed16" if signed else "unsigned12"
    path = write_ct_slice(tmp_path / "a.dcm", np.rint(hu), instance_number=1, position_z=0.0,
                          encoding=encoding, **IDS)  # fmt: skip
    values = _garbage_high_bits(path, 12, signed, syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    ours, reference, view = _both(path)
    assert view is not None and ours.dtype == reference.dtype
    np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(ours, values)  # sign-extended from bit 11, or masked
    assert (ours < 0).any() == signed


def test_compressed_and_odd_layouts_use_the_decoder(tmp_path: Path) -> None:
    hu, _ = head_phantom(32, np.random.default_rng(2))
    path = write_ct_slice(tmp_path / "rle.dcm", np.rint(hu), instance_number=1, position_z=0.0,
                          transfer_syntax=RLELossless, **IDS)  # fmt: skip
    ours, reference, view = _both(path)
    assert view is None
    np.testing.assert_array_equal(ours, reference)
    # Truncated pixel data: no view; pydicom's decoder reports it (read_dicom's error path).
    plain = write_ct_slice(tmp_path / "plain.dcm", np.rint(hu), instance_number=1,
                           position_z=0.0, **IDS)  # fmt: skip
    ds = pydicom.dcmread(plain)
    ds.PixelData = ds.PixelData[:100]
    assert _native_view(ds, dataset_meta(ds, PIXEL_KEYWORDS)) is None

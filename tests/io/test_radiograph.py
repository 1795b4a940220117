"""Radiograph DICOM reading: the 10 real SIIM files and generated 8/12/16-bit, MONOCHROME1, VOI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dxkit.errors import InvalidScanError, MissingFileError, UnsupportedFormatError
from dxkit.io.radiograph import read_radiograph

PHI = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyDate")


def write_radiograph(
    path: Path,
    stored: np.ndarray,
    *,
    bits_stored: int,
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    jpeg: bool = False,
    **tags: object,
) -> Path:
    """A minimal CR DICOM with PHI tags filled in (so the test can check they are dropped)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "DX", "AP", "CHEST"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "P123", "19700101"
    ds.PatientSex, ds.PatientAge, ds.StudyDate = "F", "054Y", "20200101"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [0.2, 0.2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    for key, value in tags.items():
        setattr(ds, key, value)
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(stored.astype(np.uint8), mode="L").save(buffer, "JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}
        ds.PixelData = stored.astype(dtype[(ds.BitsAllocated, signed)]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def gradient() -> np.ndarray:
    """An 8-bit ramp 0..255 over a 16×16 image."""
    return np.arange(256, dtype=np.int64).reshape(16, 16)


# --- real files -------------------------------------------------------------------------------


def test_real_siim_files(siim_dir: Path) -> None:
    files = sorted(siim_dir.glob("*.dcm"))
    assert len(files) == 10
    for path in files:
        image = read_radiograph(path)
        assert image.pixels.shape == (1024, 1024) and image.pixels.dtype == np.float32
        # Independent reference: pydicom's own decode, scaled by the 8 stored bits.
        reference = pydicom.dcmread(path).pixel_array.astype(np.float32) / 255.0
        np.testing.assert_allclose(image.pixels, reference, atol=1e-6)
        assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
        assert image.pixels.max() - image.pixels.min() > 0.7  # a real exposure, not blank
        assert 0.15 < float(image.pixels.mean()) < 0.85
        meta = image.meta
        assert meta["SOPInstanceUID"] == path.stem
        assert meta["Modality"] == "CR" and meta["ViewPosition"] in ("PA", "AP")
        assert meta["Rows"] == meta["Columns"] == 1024 and meta["BitsStored"] == 8
        assert meta["TransferSyntaxUID"] == JPEGBaseline8Bit
        assert len(meta["PixelSpacing"]) == 2 and meta["scaling"] == "bits"
        assert not set(PHI) & set(meta)


# --- generated files ----------------------------------------------------------------------------


def test_8_12_16_bit_scale_consistently(tmp_path: Path, gradient: np.ndarray) -> None:
    read = {}
    for bits in (8, 12, 16):
        stored = np.rint(gradient * ((1 << bits) - 1) / 255.0).astype(np.int64)
        path = write_radiograph(tmp_path / f"b{bits}.dcm", stored, bits_stored=bits)
        read[bits] = read_radiograph(path).pixels
    expected = (gradient / 255.0).astype(np.float32)
    for bits, pixels in read.items():
        assert pixels.dtype == np.float32 and pixels.shape == (16, 16)
        # Equal up to the rounding of the stored integers (half a step of that bit depth).
        step = 1.0 / ((1 << bits) - 1)
        np.testing.assert_allclose(pixels, expected, atol=step / 2 + 1e-6, err_msg=f"{bits}-bit")


def test_signed_16_bit_uses_full_range(tmp_path: Path) -> None:
    stored = np.array([[-32768, 0], [1, 32767]])
    path = write_radiograph(tmp_path / "s.dcm", stored, bits_stored=16, signed=True)
    np.testing.assert_allclose(read_radiograph(path).pixels, (stored + 32768) / 65535.0, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path, gradient: np.ndarray) -> None:
    stored = gradient * 16  # 12-bit
    mono2 = write_radiograph(tmp_path / "m2.dcm", stored, bits_stored=12)
    mono1 = write_radiograph(tmp_path / "m1.dcm", stored, bits_stored=12, photometric="MONOCHROME1")
    a, b = read_radiograph(mono2).pixels, read_radiograph(mono1).pixels
    np.testing.assert_allclose(b, 1.0 - a, atol=1e-6)
    assert b[0, 0] == pytest.approx(1.0) and b[-1, -1] < 0.01  # stored 0 is white in MONO1


def test_voi_window_hand_computed(tmp_path: Path) -> None:
    # LINEAR window, center 2048, width 1025 (PS3.3 C.11.2.1.2): values ≤ 1535 → 0,
    # > 2559 → 1, between: (x − 2047.5) / 1024 + 0.5.
    stored = np.array([[0, 1535, 1791], [2047, 2303, 4095]])
    path = write_radiograph(
        tmp_path / "w.dcm", stored, bits_stored=12, WindowCenter=2048, WindowWidth=1025
    )
    expected = np.clip((stored - 2047.5) / 1024 + 0.5, 0, 1)
    expected[stored <= 1535] = 0
    voi = read_radiograph(path, scaling="voi")
    np.testing.assert_allclose(voi.pixels, expected, atol=1e-5)
    assert voi.meta["scaling"] == "voi" and voi.meta["WindowCenter"] == 2048.0
    # The default ignores the window and scales by BitsStored.
    np.testing.assert_allclose(read_radiograph(path).pixels, stored / 4095.0, atol=1e-6)
    # MONOCHROME1 with a window: windowed, then inverted.
    path1 = write_radiograph(
        tmp_path / "w1.dcm",
        stored,
        bits_stored=12,
        photometric="MONOCHROME1",
        WindowCenter=2048,
        WindowWidth=1025,
    )
    np.testing.assert_allclose(
        read_radiograph(path1, scaling="voi").pixels, 1 - expected, atol=1e-5
    )


def test_voi_without_window_falls_back_to_bits(tmp_path: Path, gradient: np.ndarray) -> None:
    path = write_radiograph(tmp_path / "n.dcm", gradient, bits_stored=8)
    image = read_radiograph(path, scaling="voi")
    assert image.meta["scaling"] == "bits"
    np.testing.assert_allclose(image.pixels, gradient / 255.0, atol=1e-6)


def test_generated_jpeg_baseline(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    smooth = np.clip(
        np.add.outer(np.arange(64), np.arange(64)) * 2 + rng.normal(0, 2, (64, 64)), 0, 255
    )
    path = write_radiograph(tmp_path / "j.dcm", smooth, bits_stored=8, jpeg=True)
    image = read_radiograph(path)
    assert image.meta["TransferSyntaxUID"] == JPEGBaseline8Bit
    assert np.abs(image.pixels - smooth / 255.0).mean() < 0.01  # lossy, but close


def test_phi_never_in_metadata(tmp_path: Path, gradient: np.ndarray) -> None:
    meta = read_radiograph(write_radiograph(tmp_path / "p.dcm", gradient, bits_stored=8)).meta
    assert not set(PHI) & set(meta)
    assert "Doe" not in repr(meta) and "P123" not in repr(meta) and "1970" not in repr(meta)
    assert meta["ViewPosition"] == "AP" and meta["Modality"] == "DX"


def test_bad_inputs(tmp_path: Path, gradient: np.ndarray) -> None:
    with pytest.raises(MissingFileError, match=r"absent\.dcm"):
        read_radiograph(tmp_path / "absent.dcm")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(InvalidScanError, match=r"junk\.dcm"):
        read_radiograph(junk)
    path = write_radiograph(
        tmp_path / "rgb.dcm", gradient, bits_stored=8, PhotometricInterpretation="RGB"
    )
    with pytest.raises(UnsupportedFormatError, match="MONOCHROME"):
        read_radiograph(path)
    with pytest.raises(InvalidScanError, match="unknown scaling"):
        read_radiograph(path, scaling="bogus")  # type: ignore[arg-type]

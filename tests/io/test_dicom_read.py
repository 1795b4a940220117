"""read_dicom on generated files: HU values, defects, compressed syntaxes, clear errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from dxkit.data.synthetic import head_phantom, write_ct_slice, write_defect
from dxkit.errors import InvalidScanError, MissingFileError, UnsupportedFormatError
from dxkit.io.dicom import META_KEYWORDS, PHI_KEYWORDS, DicomWarning, read_dicom

IDS = {"patient_id": "P1", "study_uid": "1.2.3", "series_uid": "1.2.3.4"}


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    hu, _ = head_phantom(32, np.random.default_rng(0), lesion=True)
    return np.rint(hu)


def _write(tmp_path, hu, name="a.dcm", **kw):
    return write_ct_slice(tmp_path / name, hu, instance_number=1, position_z=0.0, **IDS, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"encoding": "unsigned12"},
        {"slope": 2.0, "intercept": -2048.0},
        {"photometric": "MONOCHROME1"},
        {"photometric": "MONOCHROME1", "encoding": "unsigned12"},
        {"transfer_syntax": RLELossless},
        {"transfer_syntax": JPEG2000Lossless},
    ],
    ids=["signed16", "unsigned12", "slope2", "mono1-signed", "mono1-unsigned", "rle", "j2k"],
)
def test_hu_round_trip(tmp_path, hu, kw) -> None:
    image = read_dicom(_write(tmp_path, hu, **kw))
    assert image.pixels.dtype == np.float32 and image.pixels.shape == hu.shape
    expected = hu if kw.get("slope", 1.0) == 1.0 else 2.0 * np.rint(hu / 2.0)
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.meta["hu_repaired"] is False


def test_monochrome1_is_inverted_relative_to_pydicom_raw(tmp_path, hu) -> None:
    path = _write(tmp_path, hu, photometric="MONOCHROME1")
    ds = pydicom.dcmread(path)
    raw = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    # Without inversion, bone would read darker than air.
    assert raw[hu == 1000].mean() < raw[hu == -1000].mean()
    assert read_dicom(path).pixels[hu == 1000].mean() > 900


def test_missing_rescale_tags_warn_and_use_one_zero(tmp_path, hu) -> None:
    path = _write(tmp_path, hu, rescale_tags=False)
    with pytest.warns(DicomWarning, match="RescaleSlope/RescaleIntercept missing"):
        image = read_dicom(path)
    np.testing.assert_array_equal(image.pixels, hu + 1024)  # stored values, untouched
    assert image.meta["rescale_missing"] is True


def test_bad_intercept_file_is_repaired_exactly(tmp_path) -> None:
    hu = np.array([[-1000, -1000, 0, 35], [70, 1000, -500, 3000]], dtype=np.float32)
    path = _write(tmp_path, hu, encoding="bad_intercept")
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 0 and ds.BitsStored == 12
    assert float(ds.RescaleIntercept) > -100
    # The header's LUT gives nonsense (air at ~+3097 HU) ...
    raw = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert raw[0, 0] == 3096 + float(ds.RescaleIntercept)
    # ... the repaired pixels are the true HU.
    image = read_dicom(path)
    np.testing.assert_array_equal(image.pixels, hu)
    assert image.meta["hu_repaired"] is True


def test_meta_has_study_tags_but_no_phi(tmp_path, hu) -> None:
    image = read_dicom(_write(tmp_path, hu, window=[(40, 80), (600, 2800)]))
    assert image.meta["PatientID"] == "P1" and image.meta["Modality"] == "CT"
    assert image.meta["WindowCenter"] == [40.0, 600.0]
    assert image.meta["ImagePositionPatient"][2] == 0.0
    assert set(image.meta) <= set(META_KEYWORDS) | {
        "TransferSyntaxUID",
        "hu_repaired",
        "rescale_missing",
    }
    assert not set(image.meta) & set(PHI_KEYWORDS)
    assert "Phantom" not in repr(image.meta)


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("truncated", InvalidScanError, "truncated or corrupt"),
        ("not_dicom", InvalidScanError, "not a DICOM file"),
        ("no_pixel_data", InvalidScanError, "has no PixelData"),
        ("unsupported_syntax", UnsupportedFormatError, "1.2.840.10008.1.2.4.100"),
    ],
)
def test_defects_raise_naming_the_file(tmp_path, kind, error, match) -> None:
    path = write_defect(tmp_path / f"{kind}.dcm", kind)
    with pytest.raises(error, match=match) as info:
        read_dicom(path)
    assert f"{kind}.dcm" in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(MissingFileError, match=r"nope\.dcm"):
        read_dicom(tmp_path / "nope.dcm")


def test_jpeg_baseline_radiograph_decodes_like_pydicom(siim_dir, recwarn) -> None:
    path = sorted(siim_dir.rglob("*.dcm"))[0]
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # JPEG baseline
    image = read_dicom(path)
    np.testing.assert_array_equal(image.pixels, ds.pixel_array.astype(np.float32))
    assert image.meta["Modality"] == "CR" and image.meta["rescale_missing"] is True
    assert not [w for w in recwarn if issubclass(w.category, DicomWarning)]  # normal for CR

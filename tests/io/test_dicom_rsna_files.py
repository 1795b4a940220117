"""The 100 real RSNA head-CT files: every one reads, with the quirks the README documents."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from dxkit.io import read_scan
from dxkit.io.dicom import read_dicom


@pytest.fixture(scope="module")
def images(rsna_dir):
    files = sorted(rsna_dir.glob("*.dcm"))
    assert len(files) == 100
    return [read_dicom(f) for f in files]


def test_all_read_as_hounsfield(images) -> None:
    signed = [im for im in images if im.meta["PixelRepresentation"] == 1]
    unsigned = [im for im in images if im.meta["PixelRepresentation"] == 0]
    assert len(signed) == 61 and len(unsigned) == 39
    assert all(im.meta["BitsStored"] == 12 for im in unsigned)
    assert all(im.pixels.shape == (512, 512) and im.pixels.dtype == np.float32 for im in images)
    assert sum(im.meta["RescaleIntercept"] == -1000 for im in images) == 1
    assert not any(im.meta["hu_repaired"] for im in images)
    # Padding outside the field of view sits far below air in 46 files.
    assert sum(float(im.pixels.min()) < -3000 for im in images) == 46
    for im in images:  # inside the field of view: air at about -1000 HU, bone up to ~3071
        fov = im.pixels[im.pixels > -1500]
        assert -1030 <= np.percentile(fov, 0.1) <= -990
        assert np.percentile(fov, 99.9) <= 3072


def test_multi_valued_windows_in_12_bit_files(images) -> None:
    for im in images:
        multi = isinstance(im.meta["WindowCenter"], list)
        assert multi == (im.meta["PixelRepresentation"] == 0)


def test_no_phi_and_pseudonymous_ids(images) -> None:
    for im in images:
        assert im.meta["PatientID"].startswith("ID_")
        assert "PatientName" not in im.meta


def test_matches_pydicom_reference(rsna_dir) -> None:
    for path in sorted(rsna_dir.glob("*.dcm"))[::10]:
        ds = pydicom.dcmread(path)
        ref = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        np.testing.assert_array_equal(read_scan(path)[0], ref)

"""read_scan dispatch and the NumPy / raster readers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dxkit.data.synthetic import head_phantom, write_ct_slice
from dxkit.errors import DataSourceError, InvalidScanError, MissingFileError, UnsupportedFormatError
from dxkit.io import read_scan
from dxkit.io.arrays import read_npz


def test_png_grey_colour_and_16bit(tmp_path) -> None:
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_scan(tmp_path / "g.png")
    assert out.shape == (1, 12, 10) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], grey)
    rgb = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_scan(tmp_path / "c.png"), np.moveaxis(rgb, -1, 0))
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    assert read_scan(tmp_path / "c.jpg").shape == (3, 8, 9)
    deep = np.array([[0, 65535], [257, 514]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_allclose(read_scan(tmp_path / "d.png")[0], [[0, 255], [1, 2]])


def test_dicom_and_unknown_suffix_by_magic(tmp_path) -> None:
    hu, _ = head_phantom(16, np.random.default_rng(0))
    path = write_ct_slice(
        tmp_path / "IM0001",
        hu,
        patient_id="P",
        study_uid="1.2",
        series_uid="1.3",
        instance_number=1,
        position_z=0.0,
    )
    out = read_scan(path)
    assert out.shape == (1, 16, 16)
    np.testing.assert_array_equal(out[0], np.rint(hu))


def test_npy_shapes_and_validation(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.ones((5, 6), np.uint8))
    np.save(tmp_path / "v.npy", np.zeros((3, 5, 6), np.int16))
    assert read_scan(tmp_path / "a.npy").shape == (1, 5, 6)
    assert read_scan(tmp_path / "v.npy").shape == (1, 3, 5, 6)
    assert read_scan(tmp_path / "v.npy").dtype == np.float32
    bad = np.ones((4, 4), np.float32)
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InvalidScanError, match=r"nan\.npy.*1 NaN"):
        read_scan(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidScanError, match="pickled"):
        read_scan(tmp_path / "obj.npy")
    np.save(tmp_path / "one.npy", np.ones(7))
    with pytest.raises(InvalidScanError, match=r"one\.npy.*1-D"):
        read_scan(tmp_path / "one.npy")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "v.npy").read_bytes()[:90])
    with pytest.raises(InvalidScanError, match=r"cut\.npy"):
        read_scan(tmp_path / "cut.npy")


def test_npz(tmp_path) -> None:
    np.savez(tmp_path / "d.npz", train_images=np.zeros((2, 4, 4)), train_labels=np.ones((2, 1)))
    with pytest.raises(InvalidScanError, match="holds 2 arrays"):
        read_scan(tmp_path / "d.npz")
    assert set(read_npz(tmp_path / "d.npz")) == {"train_images", "train_labels"}
    with pytest.raises(DataSourceError, match="val_images"):
        read_npz(tmp_path / "d.npz", ["train_images", "val_images"])


def test_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(MissingFileError, match=r"gone\.png"):
        read_scan(tmp_path / "gone.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt"):
        read_scan(tmp_path / "notes.txt")
    (tmp_path / "fake.png").write_text("hello")
    with pytest.raises(InvalidScanError, match=r"fake\.png"):
        read_scan(tmp_path / "fake.png")
    (tmp_path / "fake.dcm").write_text("hello")
    with pytest.raises(InvalidScanError, match=r"fake\.dcm: not a DICOM"):
        read_scan(tmp_path / "fake.dcm")

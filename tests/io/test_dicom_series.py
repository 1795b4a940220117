"""read_series: grouping by SeriesInstanceUID, ordering along the slice normal, bad series."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dxkit.data.synthetic import head_phantom, head_volume, write_ct_slice, write_series
from dxkit.errors import InvalidScanError
from dxkit.io.dicom import DicomWarning, read_series, slice_position


def test_shuffled_files_sorted_by_position(tmp_path) -> None:
    vol, _ = head_volume(7, 32, np.random.default_rng(1))
    true_order = write_series(tmp_path / "s", vol, patient_id="P", seed=3, shuffle=True)
    assert sorted(true_order) != true_order  # names do not give the order
    (series,) = read_series(tmp_path / "s")
    assert series.sorted_by == "position"
    assert series.paths == true_order
    np.testing.assert_array_equal(series.positions, np.arange(7) * 5.0)
    np.testing.assert_array_equal(series.volume(), np.rint(vol))


def test_oblique_tilted_series_uses_the_normal(tmp_path) -> None:
    # Gantry tilt like the RSNA files: rows along x, columns tilted in y-z.
    c, s = np.cos(0.38), np.sin(0.38)
    iop = (1.0, 0.0, 0.0, 0.0, c, -s)
    normal = np.cross(iop[:3], iop[3:])
    hu, _ = head_phantom(16, np.random.default_rng(0))
    paths = []
    for k, i in enumerate([3, 0, 2, 1]):  # written out of order
        p = write_ct_slice(
            tmp_path / f"f{k}.dcm",
            hu,
            patient_id="P",
            study_uid="1.2",
            series_uid="1.2.3",
            instance_number=10 - i,
            position_z=0.0,
            orientation=iop,
        )
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = list(np.array([-4.0, -4.0, 0.0]) + 2.5 * i * normal)
        ds.save_as(p)
        paths.append((i, p))
    (series,) = read_series([p for _, p in paths])
    assert series.paths == [p for _, p in sorted(paths)]
    np.testing.assert_allclose(np.diff(series.positions), 2.5, atol=1e-4)
    assert slice_position(series.images[0].meta) == pytest.approx(series.positions[0])


def test_falls_back_to_instance_number_with_warning(tmp_path) -> None:
    hu, _ = head_phantom(16, np.random.default_rng(0))
    for k, inst in enumerate([2, 3, 1]):
        p = write_ct_slice(
            tmp_path / f"x{k}.dcm",
            hu,
            patient_id="P",
            study_uid="1.2",
            series_uid="1.2.9",
            instance_number=inst,
            position_z=0.0,
        )
        ds = pydicom.dcmread(p)
        del ds.ImagePositionPatient
        ds.save_as(p)
    with pytest.warns(DicomWarning, match="InstanceNumber"):
        (series,) = read_series(tmp_path)
    assert series.sorted_by == "instance_number"
    assert [im.meta["InstanceNumber"] for im in series.images] == [1, 2, 3]


def test_groups_series_and_rejects_inconsistent_sizes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    write_series(tmp_path / "a", head_volume(3, 16, rng)[0], patient_id="A", seed=1)
    write_series(tmp_path / "b", head_volume(4, 16, rng)[0], patient_id="B", seed=2)
    assert sorted(len(s) for s in read_series(tmp_path)) == [3, 4]
    odd, _ = head_phantom(20, rng)
    ds = pydicom.dcmread(next((tmp_path / "a").iterdir()))
    write_ct_slice(
        tmp_path / "a" / "odd.dcm",
        odd,
        patient_id="A",
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        instance_number=9,
        position_z=99.0,
    )
    with pytest.raises(InvalidScanError, match=r"inconsistent slice sizes.*odd\.dcm \(20, 20\)"):
        read_series(tmp_path / "a")


def test_skip_unreadable(tmp_path) -> None:
    write_series(tmp_path, head_volume(3, 16, np.random.default_rng(0))[0], patient_id="A")
    (tmp_path / "junk.dcm").write_text("not dicom")
    with pytest.raises(InvalidScanError, match=r"junk\.dcm"):
        read_series(tmp_path)
    (series,) = read_series(tmp_path, skip_unreadable=True)
    assert len(series) == 3

"""kneeMRI external set: metadata.csv + pickled volumes, read with the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dxkit.data.sources.kneemri import load_kneemri
from dxkit.data.synthetic_mrnet import write_kneemri_fixture
from dxkit.errors import DataSourceError, InvalidScanError, MissingFileError


@pytest.fixture(scope="module")
def base_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kneemri_fixture(tmp_path_factory.mktemp("knee") / "kneeMRI", 6, size=32)


@pytest.fixture
def knee(base_fixture: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base_fixture, tmp_path / "kneeMRI"))


def trusted_volume(path: Path) -> np.ndarray:
    """Reference reader for pickles this test suite wrote itself (never for real data)."""
    return pickle.loads(path.read_bytes())


def test_fixture_layout(base_fixture: Path) -> None:
    meta = pd.read_csv(base_fixture / "metadata.csv")
    for col in ("volumeFilename", "aclDiagnosis", "kneeLR", "roiX", "roiY", "roiZ"):
        assert col in meta.columns
    assert set(meta["aclDiagnosis"]) == {0, 1, 2}
    assert sorted(p.name for p in base_fixture.iterdir()) == ["metadata.csv", "vol01", "vol02"]
    vol = trusted_volume(next((base_fixture / "vol01").glob("*.pck")))
    assert vol.dtype == np.uint16 and vol.ndim == 3 and vol.max() <= 4095


def test_load_kneemri_labels_grade_0_vs_1_2(base_fixture: Path) -> None:
    meta = pd.read_csv(base_fixture / "metadata.csv")
    exams = load_kneemri(base_fixture)
    assert exams.skipped == [] and len(exams) == 6
    for exam, row in zip(exams, meta.itertuples(), strict=True):
        assert exam.exam_id == row.volumeFilename.removesuffix(".pck")
        assert exam.labels == {"acl": float(row.aclDiagnosis >= 1)}
        assert exam.meta["acl_grade"] == row.aclDiagnosis and exam.meta["kneeLR"] == row.kneeLR
        assert exam.planes == ("sagittal",)
        vol = exam.volume("sagittal")
        assert vol.dtype == np.float32 and vol.min() == 0.0 and vol.max() == pytest.approx(255.0)


def test_raw_intensities_and_roi_crop_match_the_pickle(base_fixture: Path) -> None:
    meta = pd.read_csv(base_fixture / "metadata.csv").iloc[1]
    path = next(base_fixture.rglob(meta.volumeFilename))
    reference = trusted_volume(path)
    raw = load_kneemri(base_fixture, intensity="raw")[1].volume("sagittal")
    np.testing.assert_array_equal(raw, reference.astype(np.float32))
    cropped = load_kneemri(base_fixture, intensity="raw", crop_roi=True)[1].volume("sagittal")
    z, y, x = meta.roiZ, meta.roiY, meta.roiX
    expected = reference[z : z + meta.roiDepth, y : y + meta.roiHeight, x : x + meta.roiWidth]
    np.testing.assert_array_equal(cropped, expected.astype(np.float32))


def _edit_metadata(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        meta = pd.read_csv(root / "metadata.csv")
        change(meta).to_csv(root / "metadata.csv", index=False)

    return damage


def _repickle(array: np.ndarray) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / "vol02" / "100001-6.pck").write_bytes(pickle.dumps(array, protocol=2))

    return damage


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch /tmp/dxkit-kneemri-pwned",))


BAD_INPUTS = {
    "missing volume": (
        lambda root: (root / "vol02" / "100001-6.pck").unlink(),
        MissingFileError,
        r"exam 100001-6: 100001-6\.pck \(listed in .*metadata\.csv\) not found",
    ),
    "volume without metadata": (
        lambda root: (root / "vol01" / "999-1.pck").write_bytes(b""),
        DataSourceError,
        r"999-1\.pck: volume has no row in .*metadata\.csv",
    ),
    "bad grade": (
        _edit_metadata(lambda m: m.assign(aclDiagnosis=[0, 3, 1, 2, 0, 1])),
        DataSourceError,
        r"metadata\.csv:3: volume 100001-6\.pck has aclDiagnosis 3",
    ),
    "malicious pickle": (
        lambda root: (root / "vol02" / "100001-6.pck").write_bytes(pickle.dumps(_Exploit())),
        InvalidScanError,
        r"100001-6\.pck: pickle wants to load posix\.system; refused",
    ),
    "not 3-D": (
        _repickle(np.zeros((32, 32), np.uint16)),
        InvalidScanError,
        r"100001-6\.pck: volume shape \(32, 32\)",
    ),
    "NaN": (
        _repickle(np.full((4, 32, 32), np.nan, np.float32)),
        InvalidScanError,
        r"exam 100001-6: .*100001-6\.pck: holds NaN",
    ),
    "empty": (
        _repickle(np.zeros((0, 32, 32), np.uint16)),
        InvalidScanError,
        r"exam 100001-6: .*empty series",
    ),
    "duplicate volume": (
        lambda root: shutil.copy(root / "vol02" / "100001-6.pck", root / "vol01"),
        DataSourceError,
        r"exam 100001-6: 100001-6\.pck found twice",
    ),
}


@pytest.mark.parametrize("defect", list(BAD_INPUTS))
def test_bad_input_raises_when_strict_and_is_listed_when_not(defect: str, knee: Path) -> None:
    damage, error, match = BAD_INPUTS[defect]
    damage(knee)
    with pytest.raises(error, match=match):
        load_kneemri(knee)
    exams = load_kneemri(knee, strict=False)
    assert len(exams.skipped) == 1
    assert exams.skipped[0].exam_id in ("100001-6", "999-1")
    assert len(exams) == (6 if exams.skipped[0].exam_id == "999-1" else 5)
    assert not Path("/tmp/dxkit-kneemri-pwned").exists()


def test_roi_outside_the_volume_is_reported(knee: Path) -> None:
    _edit_metadata(lambda m: m.assign(roiX=m.roiX + 1000))(knee)
    with pytest.raises(InvalidScanError, match=r"100000-5\.pck: ROI x=1008 .* outside"):
        load_kneemri(knee, crop_roi=True)
    assert len(load_kneemri(knee)) == 6  # the ROI only matters when cropping


def test_broken_metadata_always_raises(knee: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"metadata\.csv is missing"):
        load_kneemri(tmp_path)
    _edit_metadata(lambda m: m.drop(columns=["aclDiagnosis"]))(knee)
    with pytest.raises(DataSourceError, match=r"missing column\(s\) \['aclDiagnosis'\]"):
        load_kneemri(knee, strict=False)
    _edit_metadata(lambda m: pd.concat([m, m.iloc[:1]]).assign(aclDiagnosis=0))(knee)
    with pytest.raises(DataSourceError, match="listed twice"):
        load_kneemri(knee, strict=False)

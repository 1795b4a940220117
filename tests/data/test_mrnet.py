"""MRNet-v1.0 layout: the generated fixture, the strict loader, and single-exam folders."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dxkit.data.exam import PLANES
from dxkit.data.sources.mrnet import load_exam_folder, load_mrnet
from dxkit.data.synthetic_mrnet import write_mrnet_fixture
from dxkit.errors import DataSourceError, InvalidScanError, MissingFileError

FINDINGS = ("abnormal", "acl", "meniscus")


@pytest.fixture(scope="module")
def base_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mrnet_fixture(tmp_path_factory.mktemp("mrnet") / "MRNet-v1.0", 6, 3, size=32)


@pytest.fixture
def mrnet(base_fixture: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture that a test may damage."""
    return Path(shutil.copytree(base_fixture, tmp_path / "MRNet-v1.0"))


def read_csv_rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --- the fixture is exactly the MRNet layout ----------------------------------------------


def test_fixture_has_the_exact_mrnet_layout(base_fixture: Path) -> None:
    top = sorted(p.name for p in base_fixture.iterdir())
    assert top == sorted(
        ["train", "valid"] + [f"{s}-{f}.csv" for s in ("train", "valid") for f in FINDINGS]
    )
    ids = {"train": [f"{i:04d}" for i in range(6)], "valid": ["0006", "0007", "0008"]}
    depth_differs = False
    for split, expected in ids.items():
        assert sorted(p.name for p in (base_fixture / split).iterdir()) == sorted(PLANES)
        for exam_id in expected:
            depths = []
            for plane in PLANES:
                vol = np.load(base_fixture / split / plane / f"{exam_id}.npy")
                assert vol.dtype == np.uint8 and vol.ndim == 3 and vol.shape[1:] == (32, 32)
                assert 17 <= vol.shape[0] <= 60
                depths.append(vol.shape[0])
            depth_differs |= len(set(depths)) > 1
        labels = {}
        for f in FINDINGS:
            rows = read_csv_rows(base_fixture / f"{split}-{f}.csv")
            assert all(re.fullmatch(r"\d{4},[01]", r) for r in rows), rows  # no header
            assert [r.split(",")[0] for r in rows] == expected
            labels[f] = np.array([int(r[-1]) for r in rows])
        # tears are abnormalities, as in MRNet; both classes present in every split
        assert np.all(labels["acl"] <= labels["abnormal"])
        assert np.all(labels["meniscus"] <= labels["abnormal"])
        assert all(0 < labels[f].sum() < len(expected) for f in FINDINGS)
    assert depth_differs


def test_fixture_is_seeded(tmp_path: Path) -> None:
    a = write_mrnet_fixture(tmp_path / "a", 2, 1, size=16, seed=5)
    b = write_mrnet_fixture(tmp_path / "b", 2, 1, size=16, seed=5)
    c = write_mrnet_fixture(tmp_path / "c", 2, 1, size=16, seed=6)
    for rel in ("train/axial/0001.npy", "train/sagittal/0000.npy", "valid/coronal/0002.npy"):
        assert np.array_equal(np.load(a / rel), np.load(b / rel))
        assert not np.array_equal(np.load(a / rel), np.load(c / rel))
    assert (a / "train-acl.csv").read_text() == (b / "train-acl.csv").read_text()


def test_planted_findings_are_learnable(tmp_path: Path) -> None:
    root = write_mrnet_fixture(tmp_path / "m", 40, 0, size=32, seed=1)
    exams = load_mrnet(root, "train")
    # A crude feature (brightest 0.2 % of each plane's voxels) must already separate the
    # findings: the planted structures are what a slice-stack model will find.
    x = np.array(
        [[np.percentile(e.volume(p), 99.8) for p in PLANES] for e in exams], dtype=np.float64
    )
    y = np.array([e.labels["abnormal"] for e in exams])
    clf = LogisticRegression().fit(x, y)
    assert roc_auc_score(y, clf.decision_function(x)) > 0.95
    # The ACL bar sits in the centre: the brightest central patch of any slice finds it.
    acl = np.array([e.labels["acl"] for e in exams])
    assert 0 < acl.sum() < len(acl)
    for plane in PLANES:
        centre = [e.volume(plane)[:, 13:19, 13:19].mean(axis=(1, 2)).max() for e in exams]
        assert roc_auc_score(acl, centre) > 0.95


# --- the loader --------------------------------------------------------------------------


def test_load_mrnet_reads_labels_and_maps_volumes_lazily(base_fixture: Path) -> None:
    exams = load_mrnet(base_fixture, "train")
    assert [e.exam_id for e in exams] == [f"{i:04d}" for i in range(6)] and exams.skipped == []
    for f in FINDINGS:
        rows = dict(r.split(",") for r in read_csv_rows(base_fixture / f"train-{f}.csv"))
        assert {e.exam_id: int(e.labels[f]) for e in exams} == {k: int(v) for k, v in rows.items()}
    exam = exams[2]
    assert exam.planes == PLANES
    vol = exam.volume("coronal")
    assert isinstance(vol, np.memmap)
    np.testing.assert_array_equal(vol, np.load(base_fixture / "train/coronal/0002.npy"))
    assert exam.series["coronal"].num_slices == vol.shape[0]
    assert [e.exam_id for e in load_mrnet(base_fixture, "valid")] == ["0006", "0007", "0008"]


def _replace(rel: str, array: np.ndarray) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        np.save(root / rel, array)

    return damage


def _drop_row(csv_name: str, exam_id: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / csv_name
        rows = [r for r in read_csv_rows(path) if not r.startswith(exam_id)]
        path.write_text("\n".join(rows) + "\n")

    return damage


def _add_row(csv_name: str, row: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        with (root / csv_name).open("a") as f:
            f.write(row + "\n")

    return damage


BAD_INPUTS = {
    "missing plane file": (
        lambda root: (root / "train/coronal/0003.npy").unlink(),
        MissingFileError,
        r"exam 0003: plane file .*train/coronal/0003\.npy is missing",
    ),
    "not 3-D": (
        _replace("train/axial/0003.npy", np.zeros((32, 32), np.uint8)),
        InvalidScanError,
        r"exam 0003: .*train/axial/0003\.npy: volume has 2 dimensions",
    ),
    "4-D volume": (
        _replace("train/axial/0003.npy", np.zeros((1, 20, 32, 32), np.uint8)),
        InvalidScanError,
        r"exam 0003: .*axial/0003\.npy: shape \(1, 20, 32, 32\); MRNet volumes are",
    ),
    "uint8 range violated": (
        _replace("train/sagittal/0003.npy", np.full((20, 32, 32), 300, np.int16)),
        InvalidScanError,
        r"exam 0003: .*sagittal/0003\.npy: values 300\.\.300 fall outside .*0\.\.255",
    ),
    "NaN": (
        _replace("train/sagittal/0003.npy", np.full((20, 32, 32), np.nan, np.float32)),
        InvalidScanError,
        r"exam 0003: .*sagittal/0003\.npy: holds NaN",
    ),
    "empty series": (
        _replace("train/axial/0003.npy", np.zeros((0, 32, 32), np.uint8)),
        InvalidScanError,
        r"exam 0003: .*axial/0003\.npy: empty series",
    ),
    "corrupt file": (
        lambda root: (root / "train/axial/0003.npy").write_bytes(b"not numpy at all"),
        InvalidScanError,
        r"exam 0003: .*axial/0003\.npy: not a readable \.npy",
    ),
    "label IDs without volumes": (
        _add_row("train-acl.csv", "0999,1"),
        DataSourceError,
        r"exam 0999: listed in .*train-acl\.csv but has no volumes",
    ),
    "volume without labels": (
        _drop_row("train-meniscus.csv", "0003"),
        DataSourceError,
        r"exam 0003: has volumes .* but no row in .*train-meniscus\.csv",
    ),
    "stray file": (
        lambda root: (root / "train/axial/notes.txt").write_text("x"),
        DataSourceError,
        r"notes\.txt: not an MRNet volume name",
    ),
}


@pytest.mark.parametrize("defect", list(BAD_INPUTS))
def test_bad_input_raises_when_strict_and_is_listed_when_not(defect: str, mrnet: Path) -> None:
    damage, error, match = BAD_INPUTS[defect]
    damage(mrnet)
    with pytest.raises(error, match=match):
        load_mrnet(mrnet, "train", strict=True)
    exams = load_mrnet(mrnet, "train", strict=False)
    assert len(exams.skipped) == 1
    skip = exams.skipped[0]
    assert re.search(match, skip.reason)
    good = {f"{i:04d}" for i in range(6)} - {skip.exam_id}
    assert {e.exam_id for e in exams} == good  # every other exam still loads
    assert skip.exam_id in ("0003", "0999", "notes")
    for e in exams:  # what loaded is usable
        assert e.volume("axial").ndim == 3


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        (lambda r: (r / "train-abnormal.csv").unlink(), MissingFileError, "train-abnormal.csv"),
        (lambda r: shutil.rmtree(r / "train/sagittal"), MissingFileError, "train/sagittal"),
        (
            lambda r: (r / "train-acl.csv").write_text("id,label\n0000,0\n"),
            DataSourceError,
            r"train-acl\.csv:1: expected 'exam_id,label'",
        ),
        (_add_row("train-acl.csv", "0000,1"), DataSourceError, "exam 0000 is listed twice"),
        (_add_row("train-acl.csv", "0010,2"), DataSourceError, "label '2'; labels must be 0 or 1"),
    ],
)
def test_broken_layout_raises_even_when_not_strict(
    mrnet: Path, damage: Callable[[Path], None], error: type, match: str
) -> None:
    damage(mrnet)
    with pytest.raises(error, match=match):
        load_mrnet(mrnet, "train", strict=False)


def test_bad_split_and_root(tmp_path: Path, base_fixture: Path) -> None:
    with pytest.raises(DataSourceError, match="split 'test' does not exist"):
        load_mrnet(base_fixture, "test")
    with pytest.raises(MissingFileError, match="split folder is missing"):
        load_mrnet(tmp_path, "train")


def test_unpadded_ids_in_label_files_match_padded_file_names(mrnet: Path) -> None:
    for f in FINDINGS:
        path = mrnet / f"train-{f}.csv"
        path.write_text("".join(f"{int(r[:4])},{r[-1]}\n" for r in read_csv_rows(path)))
    assert len(load_mrnet(mrnet, "train")) == 6


# --- one exam from a folder --------------------------------------------------------------


def test_exam_from_three_npy_files(base_fixture: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exam42"
    folder.mkdir()
    for plane in PLANES:
        shutil.copy(base_fixture / "valid" / plane / "0007.npy", folder / f"{plane}.npy")
    exam = load_exam_folder(folder)
    assert exam.exam_id == "exam42" and exam.planes == PLANES
    np.testing.assert_array_equal(exam.volume("axial"), np.load(folder / "axial.npy"))
    (folder / "coronal.npy").unlink()
    with pytest.raises(MissingFileError, match=r"exam exam42: .*coronal\.npy missing"):
        load_exam_folder(folder)


IOPS = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}


def write_mr_series(folder: Path, iop: tuple[float, ...], depth: int, size: int = 16) -> None:
    """An MR series whose slice k holds the value 100*k + 50; files are written in reverse
    position order and InstanceNumber runs backwards, so only positions give the order."""
    folder.mkdir(parents=True)
    normal = np.cross(iop[:3], iop[3:])
    series_uid = generate_uid()
    for k in reversed(range(depth)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "MR", series_uid, "1.2.3"
        ds.InstanceNumber = depth - k
        ds.ImageOrientationPatient = list(iop)
        ds.ImagePositionPatient = [float(v) for v in (3.5 * k) * normal + np.array([-10, 5, 7])]
        ds.PixelSpacing = [0.5, 0.6]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.full((size, size), 100 * k + 50, np.uint16).tobytes()
        ds.save_as(folder / f"IM{depth - k:04d}.dcm", enforce_file_format=True)


def test_exam_from_three_dicom_series(tmp_path: Path) -> None:
    depths = {"axial": 5, "coronal": 4, "sagittal": 6}
    for i, (plane, depth) in enumerate(depths.items()):
        write_mr_series(tmp_path / "exam" / f"series{i}", IOPS[plane], depth)
    exam = load_exam_folder(tmp_path / "exam", labels={"acl": 1})
    assert sorted(exam.planes) == sorted(PLANES) and exam.labels == {"acl": 1}
    for plane, depth in depths.items():
        s = exam.series[plane]
        vol = exam.volume(plane)
        assert vol.shape == (depth, 16, 16) and s.orientation == IOPS[plane]
        # slices in patient order; per-series min-max to 0..255
        expected = np.linspace(0.0, 255.0, depth, dtype=np.float32)
        np.testing.assert_allclose(vol[:, 0, 0], expected, atol=1e-3)
        assert s.spacing == pytest.approx((3.5, 0.5, 0.6))
    raw = load_exam_folder(tmp_path / "exam", intensity="raw")
    np.testing.assert_array_equal(raw.volume("axial")[:, 3, 3], [50, 150, 250, 350, 450])


def test_dicom_exam_needs_one_series_per_plane(tmp_path: Path) -> None:
    write_mr_series(tmp_path / "exam" / "a", IOPS["axial"], 3)
    write_mr_series(tmp_path / "exam" / "b", IOPS["axial"], 3)
    with pytest.raises(DataSourceError, match="holds 2 DICOM series; an exam needs three"):
        load_exam_folder(tmp_path / "exam")
    write_mr_series(tmp_path / "exam" / "c", IOPS["sagittal"], 3)
    with pytest.raises(DataSourceError, match="two axial series"):
        load_exam_folder(tmp_path / "exam")
    with pytest.raises(MissingFileError, match="no such exam folder"):
        load_exam_folder(tmp_path / "nowhere")
    assert pydicom.dcmread(next((tmp_path / "exam" / "a").iterdir())).Modality == "MR"

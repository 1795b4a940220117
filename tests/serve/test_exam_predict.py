"""ExamPredictor and `dxkit predict BUNDLE EXAM_DIR`: against a slice-at-a-time reference and
scikit-learn's logistic regression, from .npy and DICOM exam folders, and on bad input."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from sklearn.linear_model import LogisticRegression

from dxkit.cli import main
from dxkit.data.exam import PLANES, IntensityNormalization
from dxkit.data.sources.mrnet import load_exam_folder
from dxkit.errors import CheckpointError, DataSourceError, InvalidScanError
from dxkit.infer.exam_predict import ExamPredictor
from dxkit.models.fusion import PlaneFusion
from dxkit.train.config import config_from_dict
from dxkit.train.exam_module import (
    FusionInputs,
    build_networks,
    bundle_meta,
    fusion_training_inputs,
    model_meta,
    save_exam_bundle,
)

FINDINGS = ["abnormal", "acl", "meniscus"]
SMALL = {"widths": [4, 8], "depths": [1, 1], "strides": [2, 2]}
SIZE = 16
NORM = IntensityNormalization(scale=255.0, mean=0.3, std=0.2)
IOPS = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two busy threads on two shared cores thrash (10x slower here); tiny nets need one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fusion_data(n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    probs = rng.uniform(0.2, 0.8, (n, 3, 3))
    labels = (probs.mean(axis=1) + rng.normal(0, 0.1, (n, 3)) > 0.5).astype(np.float32)
    return probs, labels, np.arange(n) % 2


def make_bundle(path: Path, variant: str = "per_finding", inputs: str = "standardized_logit"):
    cfg = config_from_dict(
        {
            "name": "exam-test",
            "task": "exam",
            "data": {"source": "mrnet", "path": str(path.parent)},
            "preprocess": {"size": SIZE},
            "model": {"name": "smallresnet", "options": SMALL},
            "exam": {"variant": variant, "fusion_folds": 2, "fusion_inputs": inputs},
        }
    )
    torch.manual_seed(0)
    networks = build_networks(model_meta(cfg)).eval()
    probs, labels, folds = fusion_data()
    fusion = PlaneFusion(list(PLANES), FINDINGS)
    fusion.fit(fusion_training_inputs(inputs, probs, folds), labels)
    rng = np.random.default_rng(2)
    standardizer = (
        FusionInputs(inputs, rng.normal(0, 0.01, (3, 3)), rng.uniform(0.005, 0.02, (3, 3)))
        if inputs == "standardized_logit"
        else FusionInputs(inputs)
    )
    meta = bundle_meta(
        cfg,
        normalization=NORM,
        fusion=fusion,
        fusion_inputs=standardizer,
        thresholds=[0.3, 0.5, 0.7],
        tuning={"exam_ids": [], "fit_exam_ids": [], "auc": [None] * 3},
        oof={
            "exam_ids": [f"{i:04d}" for i in range(len(probs))],
            "fold_of_exam": torch.from_numpy(folds),
            "oof_plane_probs": torch.from_numpy(probs),
            "labels": torch.from_numpy(labels),
        },
    )
    return save_exam_bundle(path, meta, networks), networks


def exam_volumes(seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 volumes spanning 0..255 exactly (so DICOM min-max rescaling changes nothing)."""
    rng = np.random.default_rng(seed)
    vols = {}
    for plane, depth in zip(PLANES, (5, 3, 7), strict=True):
        v = rng.integers(0, 256, (depth, SIZE, SIZE), dtype=np.uint8)
        v.flat[0], v.flat[1] = 0, 255
        vols[plane] = v
    return vols


def write_npy_exam(folder: Path, vols: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for plane, v in vols.items():
        np.save(folder / f"{plane}.npy", v)
    return folder


def write_dicom_exam(folder: Path, vols: dict[str, np.ndarray]) -> Path:
    for i, (plane, vol) in enumerate(vols.items()):
        series_dir = folder / f"series{i}"
        series_dir.mkdir(parents=True)
        iop = IOPS[plane]
        normal = np.cross(iop[:3], iop[3:])
        uid = generate_uid()
        for k in range(len(vol)):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "MR", uid, "1.2.3"
            ds.InstanceNumber = len(vol) - k  # reversed: only the positions give the order
            ds.ImageOrientationPatient = list(iop)
            ds.ImagePositionPatient = [float(x) for x in 3.0 * k * normal]
            ds.PixelSpacing = [0.5, 0.5]
            ds.Rows = ds.Columns = SIZE
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = vol[k].astype(np.uint16).tobytes()
            ds.save_as(series_dir / f"IM{k:03d}.dcm", enforce_file_format=True)
    return folder


@torch.no_grad()
def reference(networks, vols: dict[str, np.ndarray], bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """Plane probabilities by a slice-at-a-time loop, fused by scikit-learn."""
    planes = np.zeros((3, 3))
    for p, plane in enumerate(PLANES):
        x = torch.from_numpy((vols[plane] / 255.0 - 0.3) / 0.2).float()[None]  # (1, D, H, W)
        for f, finding in enumerate(FINDINGS):
            key = finding + "__" + plane if networks.variant == "per_finding" else plane
            net = networks.nets[key]
            feats = torch.stack(
                [
                    net.backbone.forward_features(x[:, k][None]).mean(dim=(2, 3))[0]
                    for k in range(x.shape[1])
                ]
            )
            logits = net.head(feats.max(dim=0).values)
            planes[p, f] = torch.sigmoid(logits[0 if networks.variant == "per_finding" else f])
    meta = torch.load(bundle, weights_only=True)["dxkit"]
    probs, labels, folds = fusion_data()
    inputs = meta["fusion"]["inputs"]
    if inputs["kind"] == "standardized_logit":
        logit = np.log(probs / (1 - probs))
        train = np.empty_like(logit)
        for k in (0, 1):
            train[folds == k] = (logit[folds == k] - logit[folds == k].mean(0)) / logit[
                folds == k
            ].std(0)
        x_new = (np.log(planes / (1 - planes)) - inputs["mean"].numpy()) / inputs["std"].numpy()
    else:
        train, x_new = probs, planes
    fused = np.array(
        [
            LogisticRegression()
            .fit(train[:, :, j], labels[:, j])
            .predict_proba(x_new[None, :, j])[0, 1]
            for j in range(3)
        ]
    )
    return planes, fused


@pytest.mark.parametrize(
    ("variant", "inputs"),
    [("per_finding", "standardized_logit"), ("multitask", "probability")],
)
def test_predictions_match_slice_loop_and_sklearn(tmp_path: Path, variant: str, inputs: str):
    bundle, networks = make_bundle(tmp_path / "bundle.ckpt", variant, inputs)
    vols = exam_volumes()
    folder = write_npy_exam(tmp_path / "exam7", vols)
    predictor = ExamPredictor.from_bundle(bundle)
    pred = predictor.predict_folder(folder)
    ref_planes, ref_fused = reference(networks, vols, bundle)
    got_planes = np.array([[pred.planes[p][f] for f in FINDINGS] for p in PLANES])
    np.testing.assert_allclose(got_planes, ref_planes, atol=1e-5)
    np.testing.assert_allclose([pred.probabilities[f] for f in FINDINGS], ref_fused, atol=1e-5)
    assert pred.positive == {
        f: pred.probabilities[f] >= t for f, t in zip(FINDINGS, (0.3, 0.5, 0.7), strict=True)
    }
    assert pred.exam_id == "exam7"
    assert predictor.predict_exam(load_exam_folder(folder)) == pytest.approx(pred.probabilities)


def test_dicom_exam_gives_the_npy_probabilities(tmp_path: Path) -> None:
    bundle, _ = make_bundle(tmp_path / "bundle.ckpt")
    vols = exam_volumes(seed=3)
    predictor = ExamPredictor.from_bundle(bundle)
    from_npy = predictor.predict_folder(write_npy_exam(tmp_path / "npy", vols))
    from_dicom = predictor.predict_folder(write_dicom_exam(tmp_path / "dicom", vols))
    for f in FINDINGS:
        assert from_dicom.probabilities[f] == pytest.approx(from_npy.probabilities[f], abs=1e-5)
    assert pydicom.dcmread(next((tmp_path / "dicom" / "series0").iterdir())).Modality == "MR"


def test_cli_predict_writes_csv(tmp_path: Path) -> None:
    bundle, _ = make_bundle(tmp_path / "bundle.ckpt")
    exams = [write_npy_exam(tmp_path / f"e{i}", exam_volumes(seed=i)) for i in range(2)]
    out = tmp_path / "out" / "pred.csv"
    with pytest.raises(SystemExit) as code:
        main(["predict", str(bundle), *map(str, exams), "--out", str(out)])
    assert code.value.code == 0
    rows = list(csv.DictReader(out.open()))
    predictor = ExamPredictor.from_bundle(bundle)
    assert [r["exam"] for r in rows] == [str(e) for e in exams]
    for row, folder in zip(rows, exams, strict=True):
        pred = predictor.predict_folder(folder)
        for f in FINDINGS:
            assert float(row[f]) == pytest.approx(pred.probabilities[f], abs=1e-6)
            assert int(row[f"{f}_positive"]) == int(pred.positive[f])
            assert float(row[f"sagittal_{f}"]) == pytest.approx(pred.planes["sagittal"][f], 1e-5)


def test_bad_inputs_fail_clearly(tmp_path: Path, capsys) -> None:
    bundle, _ = make_bundle(tmp_path / "bundle.ckpt")
    predictor = ExamPredictor.from_bundle(bundle)
    folder = write_npy_exam(tmp_path / "exam", exam_volumes())
    with pytest.raises(DataSourceError, match="is a file; pass the exam folder"):
        predictor.predict_folder(folder / "axial.npy")
    np.save(folder / "coronal.npy", np.full((3, SIZE, SIZE), np.nan, np.float32))
    with pytest.raises(InvalidScanError, match=r"exam exam: .*coronal\.npy.*NaN"):
        predictor.predict_folder(folder)
    (folder / "coronal.npy").unlink()
    with pytest.raises(SystemExit) as code:
        main(["predict", str(bundle), str(folder)])
    assert code.value.code == 2 and "coronal.npy missing" in capsys.readouterr().err
    classify = tmp_path / "classify.ckpt"
    torch.save({"dxkit": {"kind": "classify"}, "state_dict": {}}, classify)
    with pytest.raises(CheckpointError, match="not an exam bundle"):
        ExamPredictor.from_bundle(classify)


def test_exam_folder_batch_keeps_the_good_exams(tmp_path: Path, capsys) -> None:
    # A folder of exam folders (nested), one without its coronal plane: the two good exams
    # are written, the bad one is listed in errors.csv with its reason, exit 1.
    bundle, _ = make_bundle(tmp_path / "bundle.ckpt")
    root = tmp_path / "exams"
    write_npy_exam(root / "site1" / "e1", exam_volumes(1))
    write_npy_exam(root / "site2" / "e2", exam_volumes(2))
    broken = write_npy_exam(root / "site2" / "e3", exam_volumes(3))
    (broken / "coronal.npy").unlink()
    out = tmp_path / "exams.csv"
    with pytest.raises(SystemExit) as code:
        main(["predict", str(bundle), str(root), "--out", str(out)])
    text = " ".join(capsys.readouterr().err.split())
    assert code.value.code == 1 and f"skipped {broken}" in text
    assert sorted(r["exam"] for r in list(csv.DictReader(out.open()))) == [
        str(root / "site1" / "e1"),
        str(root / "site2" / "e2"),
    ]
    errors = list(csv.DictReader((tmp_path / "errors.csv").open()))
    assert [e["file"] for e in errors] == [str(broken)] and "coronal.npy" in errors[0]["reason"]


def test_dicom_exams_are_found_in_a_folder_of_exams(tmp_path: Path) -> None:
    # Two DICOM exams (one folder per series, same StudyInstanceUID as anonymisers leave it)
    # and a stray series: the exams are found and predicted, the stray one is reported.
    from dxkit.io.discover import discover

    bundle, _ = make_bundle(tmp_path / "bundle.ckpt")
    root = tmp_path / "site"
    first = write_dicom_exam(root / "a", exam_volumes(1))
    second = write_dicom_exam(root / "deeper" / "b", exam_volumes(2))
    write_dicom_exam(tmp_path / "stray", {"axial": exam_volumes(3)["axial"]})
    shutil.move(str(tmp_path / "stray" / "series0"), str(root / "stray-series"))
    items, bad = discover([root], "exam")
    assert [i.source for i in items] == [str(first), str(second)]
    assert [b.source for b in bad] == [str(root / "stray-series")]
    predictor = ExamPredictor.from_bundle(bundle)
    expected = predictor.predict_folder(first).probabilities
    out = tmp_path / "exams.csv"
    with pytest.raises(SystemExit) as code:
        main(["predict", str(bundle), str(root), "--out", str(out)])
    assert code.value.code == 1
    rows = {r["exam"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {str(first), str(second)}
    for f in FINDINGS:
        assert float(rows[str(first)][f]) == pytest.approx(expected[f], abs=1e-6)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/dxkit-exam-bundle-exploit"),))


def test_untrusted_pickle_bundle_is_refused(tmp_path: Path) -> None:
    marker = Path("/tmp/dxkit-exam-bundle-exploit")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "bundle.ckpt"
    evil.write_bytes(pickle.dumps({"dxkit": {"kind": "exam"}, "x": _Exploit()}))
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        ExamPredictor.from_bundle(evil)
    assert not marker.exists()

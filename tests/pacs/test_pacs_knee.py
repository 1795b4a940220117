"""A three-plane knee MR exam (MRNet-layout fixture volumes written as three DICOM series of
one study) read by an exam bundle through Orthanc: the series are picked by orientation, and
the report's probabilities equal ``ExamPredictor.predict_folder`` on the same files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import torch
from orthanc_server import Orthanc
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

pytestmark = pytest.mark.pacs
hd = pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

from dxkit.dicom_results import read_report  # noqa: E402
from dxkit.pacs.client import PacsClient  # noqa: E402
from dxkit.pacs.inference import PacsModel  # noqa: E402
from dxkit.pacs.run import run_study  # noqa: E402

PLANES, FINDINGS = ["axial", "coronal", "sagittal"], ["abnormal", "acl", "meniscus"]
IOPS = {"axial": (1, 0, 0, 0, 1, 0), "coronal": (1, 0, 0, 0, 0, -1),
        "sagittal": (0, 1, 0, 0, 0, -1)}  # fmt: skip


def tiny_exam_bundle(path: Path) -> Path:
    """Small random plane networks and a fitted plane fusion, saved with the exam module's
    own ``save_exam_bundle`` (the test checks the PACS path, not accuracy)."""
    from dxkit.data.exam import IntensityNormalization
    from dxkit.infer.exam_model import BUNDLE_FORMAT, build_networks
    from dxkit.models.fusion import PlaneFusion
    from dxkit.train.exam_module import save_exam_bundle

    model = {"backbone": "smallresnet", "planes": PLANES, "findings": FINDINGS,
             "variant": "multitask", "in_chans": 1, "pooling": "max",
             "options": {"widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}}  # fmt: skip
    torch.manual_seed(0)
    networks = build_networks(model)
    rng = np.random.default_rng(0)
    fusion = PlaneFusion(PLANES, FINDINGS).fit(rng.random((40, 3, 3)), rng.random((40, 3)) > 0.5)
    meta = {"kind": "exam", "format": BUNDLE_FORMAT, "model": model, "findings": FINDINGS,
            "planes": PLANES,
            "fusion": {"state": fusion.to_state()},
            "normalization": IntensityNormalization(mean=0.4, std=0.2).to_dict(),
            "size": 32, "thresholds": [0.5, 0.4, 0.6], "dxkit_version": "test"}  # fmt: skip
    return save_exam_bundle(path, meta, networks)


def write_knee_study(root: Path, out: Path) -> tuple[str, list[Path]]:
    """Exam 0000 of an MRNet-layout fixture as three MR series (one study, valid UIDs)."""
    from dxkit.data.synthetic_mrnet import write_mrnet_fixture

    write_mrnet_fixture(root, n_train=1, n_valid=0, size=32, slices=(4, 6))
    study, files = generate_uid(), []
    for number, plane in enumerate(PLANES, start=1):
        vol = np.load(root / "train" / plane / "0000.npy")
        iop = np.array(IOPS[plane], dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        series = generate_uid()
        (out / plane).mkdir(parents=True)
        for k, image in enumerate(vol):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
            ds.PatientName, ds.PatientID = "Knee^Test", "KNEE-0000"
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", "ACC-KNEE"
            ds.Modality, ds.BodyPartExamined = "MR", "KNEE"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SeriesNumber, ds.InstanceNumber = number, k + 1
            ds.ImageOrientationPatient = [float(x) for x in iop]
            ds.ImagePositionPatient = [float(x) for x in 3.0 * k * normal]
            ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 3.0
            ds.FrameOfReferenceUID = study + ".1"
            ds.Rows, ds.Columns = image.shape
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = image.astype(np.uint16).tobytes()
            path = out / plane / f"IM{k:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return study, files


def test_knee_exam_gets_a_report_matching_the_exam_predictor(
    orthanc: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Run through the CLI, selecting the study by its accession number."""
    from dxkit.cli import main
    from dxkit.infer.exam_predict import ExamPredictor

    bundle = tiny_exam_bundle(tmp_path / "bundle.ckpt")
    study, files = write_knee_study(tmp_path / "mrnet", tmp_path / "dicom")
    orthanc.upload(files)
    model = PacsModel(bundle)
    assert model.kind == "exam"
    with pytest.raises(SystemExit) as exit_:
        main(["pacs", "run", str(bundle), "--url", orthanc.dicomweb, "--accession", "ACC-KNEE"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "written" in out and "Comprehensive" in out and study not in out
    series = {s["MainDicomTags"].get("Modality"): s for s in orthanc.series_of(study)}
    sr_id = series["SR"]["Instances"][0]
    sr = pydicom.dcmread(io.BytesIO(requests.get(f"{orthanc.rest}/instances/{sr_id}/file",
                                                 timeout=30).content))  # fmt: skip
    assert sr.StudyInstanceUID == study and sr.AccessionNumber == "ACC-KNEE"
    report = read_report(hd, sr)
    expected = ExamPredictor.from_bundle(bundle).predict_folder(tmp_path / "dicom")
    for finding in FINDINGS:
        got = report.findings[finding]
        assert got.probability == pytest.approx(expected.probabilities[finding], abs=1e-5)
        assert got.positive == expected.positive[finding]
    assert report.referenced == {str(pydicom.dcmread(p).SOPInstanceUID) for p in files}
    assert run_study(PacsClient(orthanc.dicomweb), model, study).status == "already done"
    client = PacsClient(orthanc.dicomweb)  # --since: studies from that date on (20260101)
    assert study in client.find_studies(since="2025-12-31")
    assert study not in client.find_studies(since="2026-01-02")

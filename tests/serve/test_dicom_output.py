"""The server's ``output=dicom``: a Secondary Capture heatmap and a TID 1500 report in the
upload's study, for well-formed series and for real files without SOP Class or valid UIDs
(the 100 RSNA head-CT files as they are)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from deploy_fixtures import ct_checkpoint, ct_series, png_bytes
from fastapi.testclient import TestClient
from pydicom.uid import UID

from dxkit.serve.app import create_app

hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app([ct_checkpoint()]), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def name(client: TestClient) -> str:
    return client.get("/v1/models").json()["models"][0]["name"]


def parts(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]


def unzip(content: bytes) -> tuple[pydicom.Dataset, pydicom.Dataset]:
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert sorted(archive.namelist()) == ["findings_sr.dcm", "heatmap_sc.dcm"]
    sc = pydicom.dcmread(io.BytesIO(archive.read("heatmap_sc.dcm")))
    sr = pydicom.dcmread(io.BytesIO(archive.read("findings_sr.dcm")))
    return sc, sr


def test_series_gives_capture_and_measurement_report_in_its_study(
    client: TestClient, name: str
) -> None:
    from dxkit.dicom_results import read_report

    files = ct_series()
    data = {"model": name, "output": "dicom"}
    r = client.post("/v1/explain", data=data, files=parts(files))
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    source = pydicom.dcmread(files[0])
    sc, sr = unzip(r.content)
    for ds in (sc, sr):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert UID(ds.SOPInstanceUID).is_valid
    assert sc.SOPClassUID == UID("1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture
    assert sc.PhotometricInterpretation == "RGB" and sc.BurnedInAnnotation == "YES"
    # 64 px slice enlarged ×4 to stay legible, plus the 44-row band (scale + warning).
    assert sc.pixel_array.shape == (64 * 4 + 44, 256, 3)
    assert "NOT FOR DIAGNOSIS" in sc.ImageComments
    assert sr.SOPClassUID == UID("1.2.840.10008.5.1.4.1.1.88.34")  # Comprehensive 3D SR
    report = read_report(hd, sr)
    json_answer = client.post("/v1/predict", data={"model": name}, files=parts(files)).json()
    for f in json_answer["findings"]:
        got = report.findings[f["name"]]
        assert got.probability == pytest.approx(f["probability"], abs=1e-6)
        assert got.threshold == pytest.approx(f["threshold"], abs=1e-6)
        assert got.positive == f["positive"]
    assert report.referenced == {pydicom.dcmread(p).SOPInstanceUID for p in files}
    png = ("files", ("x.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png"))
    refused = client.post("/v1/explain", data=data, files=[png])
    assert refused.status_code == 422 and "DICOM upload" in refused.json()["error"]["message"]


def test_every_tenth_real_rsna_file_gives_dicom_output(
    client: TestClient, name: str, rsna_dir: Path
) -> None:
    check_rsna_output(client, name, sorted(rsna_dir.glob("*.dcm"))[::10])


@pytest.mark.slow
def test_all_100_real_rsna_files_give_dicom_output(
    client: TestClient, name: str, rsna_dir: Path
) -> None:
    files = sorted(rsna_dir.glob("*.dcm"))
    assert len(files) == 100
    check_rsna_output(client, name, files)


def check_rsna_output(client: TestClient, name: str, files: list[Path]) -> None:
    """RSNA files have no SOP Class UID in the dataset and 'ID_…' strings for UIDs: the
    results get valid UIDs derived from them, the SOP Class comes from the file meta, and
    no original non-UID identifier becomes an identifier of the new objects."""
    from dxkit.dicom_results import read_report
    from dxkit.dicom_results.identity import derived_uid

    assert files
    for path in files:
        r = client.post("/v1/explain", data={"model": name, "output": "dicom"},
                        files=parts([path]))  # fmt: skip
        assert r.status_code == 200, (path.name, r.text)
        source = pydicom.dcmread(path, stop_before_pixels=True)
        sc, sr = unzip(r.content)
        study = derived_uid("dxkit-source", "StudyInstanceUID", str(source.StudyInstanceUID))
        instance = derived_uid("dxkit-source", "SOPInstanceUID", str(source.SOPInstanceUID))
        for ds in (sc, sr):
            assert ds.StudyInstanceUID == study
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                assert UID(ds[keyword].value).is_valid
        assert read_report(hd, sr).referenced == {instance}
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPClassUID == source.file_meta.MediaStorageSOPClassUID
        assert "ID_" not in str(sr.StudyInstanceUID) + str(sc.SeriesInstanceUID)

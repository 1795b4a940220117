"""Pull, infer, push against a real Orthanc: a generated CT series (valid UIDs) read by the
session's tiny CT classifier; the SR and the heatmap land in the same study, their content
matches the Predictor on the same files, a rerun writes nothing, a study without a readable
series is reported, and an unreachable or crashing PACS ends in a clear error."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom
import pytest
from deploy_fixtures import ct_checkpoint, ct_series
from orthanc_server import Orthanc, start_orthanc

pytestmark = pytest.mark.pacs
hd = pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

from dxkit.dicom_results import read_report  # noqa: E402
from dxkit.pacs.client import PacsClient, hashed  # noqa: E402
from dxkit.pacs.errors import PacsError  # noqa: E402
from dxkit.pacs.inference import PacsModel  # noqa: E402
from dxkit.pacs.rules import SeriesRules  # noqa: E402
from dxkit.pacs.run import run_study  # noqa: E402

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def ct_study(orthanc: Orthanc) -> tuple[str, list[Path]]:
    files = ct_series()
    orthanc.upload(files)
    return str(pydicom.dcmread(files[0]).StudyInstanceUID), files


def expected_findings(files: list[Path]) -> dict[str, float]:
    """Independent reference: the Predictor on each slice file, the series taking each
    finding's highest slice (the series rule the server documents)."""
    from dxkit.infer.predictor import Predictor

    predictor = Predictor.from_checkpoint(ct_checkpoint())
    rows = predictor.predict_files(files)
    return {n: max(r.probabilities[n] for r in rows) for n in predictor.label_names}


def test_ct_study_gets_report_and_heatmap_and_rerun_writes_nothing(
    orthanc: Orthanc, ct_study: tuple[str, list[Path]]
) -> None:
    study, files = ct_study
    client = PacsClient(orthanc.dicomweb)
    model = PacsModel(ct_checkpoint())
    before = {s["ID"] for s in orthanc.series_of(study)}
    outcome = run_study(client, model, study)
    assert outcome.status == "written", outcome
    new = [s for s in orthanc.series_of(study) if s["ID"] not in before]
    assert sorted(s["MainDicomTags"]["Modality"] for s in new) == ["OT", "SR"] or len(new) == 2
    uids = {str(pydicom.dcmread(p).SOPInstanceUID) for p in files}
    sr_series = next(s for s in new if s["MainDicomTags"].get("Modality") == "SR")
    [sr_id] = sr_series["Instances"]
    sr = pydicom.dcmread(io.BytesIO(_file(orthanc, sr_id)))
    assert sr.SOPClassUID == SR_CLASS and sr.StudyInstanceUID == study
    report = read_report(hd, sr)
    assert report.device_uid == str(model.identity.device_uid)
    assert report.referenced == uids
    for name, p in expected_findings(files).items():
        assert report.findings[name].probability == pytest.approx(p, abs=1e-5)
    sc_series = next(s for s in new if s is not sr_series)
    sc = pydicom.dcmread(io.BytesIO(_file(orthanc, sc_series["Instances"][0])))
    assert sc.SOPClassUID == SC_CLASS and "NOT FOR DIAGNOSIS" in sc.ImageComments
    assert sc.PatientID == pydicom.dcmread(files[0]).PatientID
    count = orthanc.instance_count()
    again = run_study(client, model, study)
    assert again.status == "already done"
    assert orthanc.instance_count() == count


def test_study_without_a_readable_series_is_reported(orthanc: Orthanc, tmp_path: Path) -> None:
    from dxkit.data.synthetic import generate_ct_dataset

    generate_ct_dataset(tmp_path, n_patients=1, slices_per_patient=3, size=32, seed=11)
    files = sorted(tmp_path.rglob("*.dcm"))
    orthanc.upload(files)
    model = PacsModel(ct_checkpoint())
    model.rules = SeriesRules(modalities=["MR"])
    count = orthanc.instance_count()
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    outcome = run_study(PacsClient(orthanc.dicomweb), model, study)
    assert outcome.status == "no suitable series"
    assert "modality CT (reads MR)" in outcome.detail
    assert orthanc.instance_count() == count


def test_unreachable_pacs_is_a_clear_error_after_retries() -> None:
    from orthanc_server import free_port

    client = PacsClient(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=2, attempts=2)
    with pytest.raises(PacsError, match=r"could not be reached .* after 2 attempt"):
        client.find_studies(study="1.2.3")


def test_cli_exits_2_with_one_line_when_the_pacs_is_down(capsys: pytest.CaptureFixture) -> None:
    from orthanc_server import free_port

    from dxkit.cli import main

    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(SystemExit) as exit_:
        main(["pacs", "run", str(ct_checkpoint()), "--url", url, "--study", "1.2.3",
              "--attempts", "1"])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "could not be reached" in err and "Traceback" not in err


def test_pacs_killed_mid_store_leaves_no_report_and_rerun_completes(tmp_path: Path) -> None:
    """The heatmap is stored, then the PACS dies before the report: the run ends with a
    clear error; after a restart no report exists, and the rerun stores the report without
    duplicating the heatmap."""
    orthanc = start_orthanc(tmp_path / "orthanc")
    try:
        files = ct_series()
        orthanc.upload(files)
        study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        client = PacsClient(orthanc.dicomweb, timeout=5, attempts=2)
        model = PacsModel(ct_checkpoint())
        store = client.store
        calls: list[int] = []

        def store_then_crash(datasets, what):  # type: ignore[no-untyped-def]
            if calls:
                orthanc.kill()
            calls.append(1)
            store(datasets, what)

        client.store = store_then_crash  # type: ignore[method-assign]
        with pytest.raises(PacsError, match="could not be reached"):
            run_study(client, model, study)
        orthanc.restart()
        modalities = [s["MainDicomTags"].get("Modality") for s in orthanc.series_of(study)]
        assert "SR" not in modalities
        count = orthanc.instance_count()
        assert count == len(files) + 1  # the source series and the one heatmap
        outcome = run_study(PacsClient(orthanc.dicomweb), model, study)
        assert outcome.status == "written"
        assert orthanc.instance_count() == count + 1  # the report only: no duplicate
    finally:
        orthanc.stop()


def _file(orthanc: Orthanc, instance_id: str) -> bytes:
    import requests

    r = requests.get(f"{orthanc.rest}/instances/{instance_id}/file", timeout=30)
    r.raise_for_status()
    return r.content


def test_undecodable_instance_is_skipped_and_named_in_the_report(
    orthanc: Orthanc, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """...and the log, even at DEBUG, names the study and the instance by hashes only."""
    from dxkit.data.synthetic import generate_ct_dataset

    caplog.set_level(logging.DEBUG)
    generate_ct_dataset(tmp_path / "ct", n_patients=1, slices_per_patient=5, size=64, seed=31)
    files = sorted((tmp_path / "ct").rglob("*.dcm"))
    broken = pydicom.dcmread(files[2])
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 2]  # half the pixels
    broken.save_as(files[2])
    orthanc.upload(files)
    study = str(broken.StudyInstanceUID)
    outcome = run_study(PacsClient(orthanc.dicomweb), PacsModel(ct_checkpoint()), study)
    assert outcome.status == "written" and outcome.skipped == [str(broken.SOPInstanceUID)]
    sr_series = next(s for s in orthanc.series_of(study) if s["MainDicomTags"]["Modality"] == "SR")
    report = read_report(hd, pydicom.dcmread(io.BytesIO(_file(orthanc, sr_series["Instances"][0]))))
    assert len(report.skipped) == 1 and report.skipped[0].startswith(str(broken.SOPInstanceUID))
    assert str(broken.SOPInstanceUID) not in report.referenced and len(report.referenced) == 4
    for value in (study, str(broken.SOPInstanceUID), str(broken.PatientID)):
        assert value not in caplog.text
    assert hashed(study) in caplog.text
    good = [p for p in files if p != files[2]]
    for name, p in expected_findings(good).items():
        assert report.findings[name].probability == pytest.approx(p, abs=1e-5)

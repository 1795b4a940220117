"""The 10 real SIIM radiographs (JPEG-compressed, uploaded as they are) read by a tiny
segmenter through Orthanc: each study gets a DICOM SEG that round-trips to the mask the
segment prediction path gives for the original file (0 pixel mismatches) and a report whose
probability matches it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import yaml
from orthanc_server import Orthanc

pytestmark = pytest.mark.pacs
hd = pytest.importorskip("highdicom")
pytest.importorskip("dicomweb_client")

from dxkit.dicom_results import read_report  # noqa: E402
from dxkit.dicom_results.segmentation import read_mask  # noqa: E402
from dxkit.pacs.client import PacsClient  # noqa: E402
from dxkit.pacs.inference import PacsModel  # noqa: E402
from dxkit.pacs.run import run_study  # noqa: E402

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A segmenter trained one short epoch on generated radiographs (the test checks the
    DICOM path, not accuracy)."""
    from dxkit.cli import main
    from dxkit.data.synthetic_siim import write_siim_fixture

    root = tmp_path_factory.mktemp("siim-model")
    dicom, rle_csv, _ = write_siim_fixture(root / "data", n_images=16, shape=(64, 64))
    raw = {
        "name": "siim-pacs", "task": "segment", "output_dir": str(root / "runs"),
        "data": {"source": "siim", "path": str(dicom), "csv": str(rle_csv), "batch_size": 4,
                 "val_fraction": 0.25, "test_fraction": 0.25},
        "preprocess": {"size": 32},
        "segment": {"decision": "segmenter"},
        "train": {"epochs": 1, "lr": 0.003},
    }  # fmt: skip
    (root / "siim.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as done:
        main(["train", str(root / "siim.yaml"), "--no-evaluate"])
    assert not done.value.code
    return root / "runs" / "siim-pacs" / "checkpoints" / "best.ckpt"


def _file(orthanc: Orthanc, instance_id: str) -> pydicom.Dataset:
    r = requests.get(f"{orthanc.rest}/instances/{instance_id}/file", timeout=30)
    r.raise_for_status()
    return pydicom.dcmread(io.BytesIO(r.content))


def test_real_radiographs_get_seg_that_round_trips(
    orthanc: Orthanc, siim_dir: Path, segmenter: Path
) -> None:
    from dxkit.infer.segment_model import load_segmenter
    from dxkit.infer.segment_predict import predict_files

    files = sorted(siim_dir.rglob("*.dcm"))
    assert len(files) == 10
    orthanc.upload(files)
    # One radiograph per call, as the PACS path predicts each study: a batch of ten would run
    # other convolution kernels, and a pixel at the threshold could flip on float rounding.
    local = load_segmenter(segmenter)
    expected = [predict_files(local, [path])[0] for path in files]
    model = PacsModel(segmenter)
    client = PacsClient(orthanc.dicomweb)
    for path, want in zip(files, expected, strict=True):
        source = pydicom.dcmread(path, stop_before_pixels=True)
        assert source.file_meta.TransferSyntaxUID.is_compressed
        study = str(source.StudyInstanceUID)
        outcome = run_study(client, model, study)
        assert outcome.status == "written", outcome
        new = {s["MainDicomTags"].get("Modality"): s for s in orthanc.series_of(study)}
        assert {"SEG", "SR"} <= set(new)
        seg = _file(orthanc, new["SEG"]["Instances"][0])
        assert seg.SOPClassUID == SEG_CLASS and seg.StudyInstanceUID == study
        mask = read_mask(hd, seg, str(source.SOPInstanceUID))
        assert mask.shape == want.mask.shape
        assert int(np.count_nonzero(mask != want.mask)) == 0
        report = read_report(hd, _file(orthanc, new["SR"]["Instances"][0]))
        [finding] = report.findings.values()
        assert finding.probability == pytest.approx(want.probability, abs=1e-5)
        assert finding.positive == want.positive
        assert report.referenced == {str(source.SOPInstanceUID)}

"""The DICOM result builders on real headers, without a PACS: SEG round trip of a
non-trivial mask, report content (incl. skipped instances), source headers made linkable
without editing the source, heatmap capture with its burned-in scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from dxkit.dicom_results import (
    DicomOutputError,
    Finding,
    ModelIdentity,
    build_report,
    read_report,
    reference_headers,
)
from dxkit.dicom_results.capture import WARNING, build_heatmap_capture
from dxkit.dicom_results.identity import derived_uid
from dxkit.dicom_results.segmentation import build_segmentation, read_mask

hd = pytest.importorskip("highdicom")
IDENTITY = ModelIdentity("tiny", "dxkit test", "ab" * 32)


def test_seg_of_a_real_radiograph_round_trips_a_random_mask(siim_dir: Path) -> None:
    path = sorted(siim_dir.rglob("*.dcm"))[0]
    source = pydicom.dcmread(path, stop_before_pixels=True)
    rng = np.random.default_rng(0)
    mask = (rng.random((int(source.Rows), int(source.Columns))) > 0.7).astype(np.uint8)
    refs = reference_headers([source])
    seg = build_segmentation(hd, refs, 0, mask, "pneumothorax", IDENTITY)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "36118008"
    back = read_mask(hd, seg, str(source.SOPInstanceUID))
    assert int(np.count_nonzero(back != mask)) == 0 and 0 < back.sum() < back.size
    empty = build_segmentation(hd, refs, 0, np.zeros_like(mask), "pneumothorax", IDENTITY)
    assert read_mask(hd, empty, str(source.SOPInstanceUID)).sum() == 0
    with pytest.raises(DicomOutputError, match="must match its source image"):
        build_segmentation(hd, refs, 0, mask[:10], "pneumothorax", IDENTITY)


def test_report_on_an_rsna_header_derives_class_and_uids(rsna_dir: Path) -> None:
    path = sorted(rsna_dir.glob("*.dcm"))[0]
    source = pydicom.dcmread(path, stop_before_pixels=True)
    original = str(source.SOPInstanceUID)
    assert "SOPClassUID" not in source and not UID(original).is_valid
    refs = reference_headers([source])
    assert str(source.SOPInstanceUID) == original  # the source is not edited
    assert refs.replaced == ["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"]
    findings = [Finding("any", 0.73, 0.5, True), Finding("subdural", 0.1, 0.3, False)]
    sr = build_report(hd, refs, findings, IDENTITY, skipped=[("1.2.3.4", "pixel data bad")])
    report = read_report(hd, sr)
    assert report.findings["any"] == Finding("any", pytest.approx(0.73), 0.5, True)  # type: ignore[arg-type]
    assert report.findings["subdural"].positive is False
    assert report.skipped == ["1.2.3.4: pixel data bad"]
    assert report.device_uid == str(IDENTITY.device_uid)
    assert report.referenced == {derived_uid("dxkit-source", "SOPInstanceUID", original)}
    assert sr.StudyInstanceUID == derived_uid(
        "dxkit-source", "StudyInstanceUID", str(source.StudyInstanceUID)
    )
    again = build_report(hd, reference_headers([source]), findings, IDENTITY)
    assert again.SOPInstanceUID == sr.SOPInstanceUID  # same study + model → same UIDs
    other = ModelIdentity("tiny", "dxkit test", "cd" * 32)
    assert build_report(hd, refs, findings, other).SOPInstanceUID != sr.SOPInstanceUID


def test_headers_of_two_studies_are_refused(rsna_dir: Path) -> None:
    files = sorted(rsna_dir.glob("*.dcm"))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files[:40]]
    if len({str(h.StudyInstanceUID) for h in headers}) < 2:
        pytest.skip("the first 40 RSNA files share one study")
    with pytest.raises(DicomOutputError, match="different studies"):
        reference_headers(headers)


def test_heatmap_capture_burns_in_scale_and_warning(rsna_dir: Path) -> None:
    source = pydicom.dcmread(sorted(rsna_dir.glob("*.dcm"))[0], stop_before_pixels=True)
    refs = reference_headers([source])
    grey = np.full((32, 32), 128, np.uint8)
    heat = np.zeros((32, 32), np.float32)
    sc = build_heatmap_capture(hd, refs, 0, grey, heat, "any", "gradcam", "relative", IDENTITY)
    pixels = sc.pixel_array
    assert pixels.shape == (32 * 8 + 44, 256, 3)
    band = pixels[-44:]
    red_text = (band[..., 0] > 200) & (band[..., 1] < 100)
    assert red_text.sum() > 50  # the warning, in red
    bar = band[4:14, 20:236]
    assert bar[:, -1].mean() > bar[:, 0].mean() + 100  # dark → bright scale
    assert WARNING in sc.ImageComments and sc.BurnedInAnnotation == "YES"

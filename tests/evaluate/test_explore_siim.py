"""The explorer on SIIM folders (radiograph DICOMs + run-length CSV): counts from the masks,
patients grouped but never named, mask areas, tinted examples — on generated and real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dxkit.data.synthetic_siim import write_siim_fixture
from dxkit.errors import MissingFileError
from dxkit.evaluate.explore import detect_kind, explore_source
from dxkit.evaluate.explore_html import render_explorer
from dxkit.evaluate.explore_siim import siim_catalog
from dxkit.preprocess.rle import decode_rows, read_rle_csv


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("siim")
    dicom, csv_path, masks = write_siim_fixture(root, n_images=24, shape=(96, 80))
    return {"root": root, "dicom": dicom, "csv": csv_path, "masks": masks}


def test_counts_patients_and_areas_match_the_masks(fixture: dict) -> None:
    root, masks = fixture["root"], fixture["masks"]
    assert detect_kind(root) == "siim"
    ex = explore_source(root, max_images=24, per_label=3)
    s = ex.summary
    positives = sum(int(m.any()) for m in masks.values())
    assert s["source"]["kind"] == "siim" and s["counts"]["total"] == 24
    assert s["counts"]["splits"]["all"]["labels"]["pneumothorax"] == positives
    patients = {
        pydicom.dcmread(p, stop_before_pixels=True).PatientID
        for p in fixture["dicom"].rglob("*.dcm")
    }
    assert s["patients"]["total"] == s["patients"]["per_split"]["all"]["distinct"] == 12
    assert len(patients) == 12
    area = s["metadata"]["columns"]["mask_area_percent"]
    expected = [100 * m.sum() / m.size for m in masks.values()]
    assert area["max"] == pytest.approx(max(expected)) and area["min"] == pytest.approx(0.0)
    assert area["mean"] == pytest.approx(np.mean(expected))


def test_examples_are_tinted_where_the_mask_is_and_no_identity_leaks(fixture: dict) -> None:
    ex = explore_source(fixture["root"], max_images=24, per_label=2)
    positive_tile = ex.montage["pneumothorax"][0][0]
    empty_tile = ex.montage["no pneumothorax"][0][0]
    assert positive_tile.ndim == 3 and positive_tile.shape[-1] == 3
    red_excess = positive_tile[..., 0].astype(int) - positive_tile[..., 1].astype(int)
    assert red_excess.max() > 40  # the tinted mask
    assert (empty_tile[..., 0] == empty_tile[..., 1]).all()  # nothing tinted without a mask
    page = render_explorer(ex) + json.dumps(ex.summary)
    assert "SYNTH" not in page  # patient ids are hashed, never shown
    assert not any(image_id in page for image_id in fixture["masks"])


def test_rle_csv_is_recognised_with_or_without_header(tmp_path: Path) -> None:
    from dxkit.evaluate.explore_siim import is_rle_csv

    cases = {
        "header.csv": "ImageId, EncodedPixels\n1.2.3, -1\n",
        "bare.csv": "1.2.3, 5 10 3 2\n",
        "empty_mask.csv": "1.2.3,-1\n",
        "labels.csv": "path,label\na.png,1\n",
        "three.csv": "a,1,2\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    found = {name for name in cases if is_rle_csv(tmp_path / name)}
    assert found == {"header.csv", "bare.csv", "empty_mask.csv"}


def test_missing_rle_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="EncodedPixels"):
        siim_catalog(tmp_path)


def test_real_siim_sample(siim_dir: Path) -> None:
    ex = explore_source(siim_dir, max_images=10, per_label=5)
    s = ex.summary
    rles = read_rle_csv(siim_dir / "train-rle-sample.csv")
    positives = sum(int(decode_rows(r, (1024, 1024)).any()) for r in rles.values())
    assert s["counts"]["total"] == len(rles) == 10
    assert s["counts"]["splits"]["all"]["labels"]["pneumothorax"] == positives == 5
    assert "CR" in json.dumps(s["metadata"]["columns"]["Modality"])  # from the headers

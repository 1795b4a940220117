"""The dataset explorer: counts, patient overlap, duplicates, slices, HU histograms, metadata,
examples and privacy for all four sources, each checked against an independent reference
(the README's split sizes, NumPy on the raw arrays, pydicom on the raw files)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from dxkit.data.dicom_table import build_dicom_table
from dxkit.data.synthetic import generate_ct_dataset
from dxkit.data.synthetic_mrnet import write_mrnet_fixture
from dxkit.errors import DataSourceError, MissingFileError, UnsupportedFormatError
from dxkit.evaluate.explore import (
    HU_EDGES,
    UINT8_EDGES,
    detect_kind,
    explore_source,
    hash_id,
    phi_columns,
)
from dxkit.evaluate.explore_html import render_explorer, write_explorer
from dxkit.evaluate.html import fmt

CHROMIUM = Path("/usr/bin/chromium")


def json_numbers(obj: Any) -> set[str]:
    """Every number in a JSON document, formatted the way the page formats numbers."""
    if isinstance(obj, dict):
        return set().union(*(json_numbers(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(json_numbers(v) for v in obj)) if obj else set()
    if isinstance(obj, int | float) and not isinstance(obj, bool):
        return {fmt(obj)}
    return set()


def assert_page_numbers_in_json(page: str, summary: dict[str, Any]) -> None:
    cells = re.findall(r'<td class="num">([^<]*)</td>', page)
    assert cells, "no numeric cells on the page"
    known = json_numbers(summary)
    missing = [c for c in cells if c not in known]
    assert not missing, f"numbers on the page but not in explore.json: {missing[:5]}"


# --------------------------------------------------------------------------- MedMNIST


def test_breastmnist_counts_duplicates_and_histograms(medmnist_dir: Path, tmp_path: Path) -> None:
    npz = medmnist_dir / "breastmnist.npz"
    ex = explore_source(npz, max_images=2000, per_label=3)  # reads all 780 images
    counts = ex.summary["counts"]
    assert {s: v["n"] for s, v in counts["splits"].items()} == {
        "train": 546,
        "val": 78,
        "test": 156,
    }
    raw = np.load(npz)
    for split in ("train", "val", "test"):
        y = raw[f"{split}_labels"][:, 0]
        assert counts["splits"][split]["labels"] == {
            "malignant": int((y == 0).sum()),
            "normal, benign": int((y == 1).sum()),
        }
    # identical images across splits, found independently from the raw bytes
    seen = {s: {x.tobytes() for x in raw[f"{s}_images"]} for s in ("train", "val", "test")}
    shared = (
        (seen["train"] & seen["val"])
        | (seen["train"] & seen["test"])
        | (seen["val"] & seen["test"])
    )
    assert ex.summary["duplicates"]["across_splits"] == len(shared)
    assert ex.summary["patients"] == {"checked": False, "kind": "patient"}
    # intensities of all malignant images, per NumPy
    inten = ex.summary["intensity"]
    assert inten["unit"] == "pixel value (0-255)" and inten["edges"] == UINT8_EDGES.tolist()
    images = np.concatenate([raw[f"{s}_images"][raw[f"{s}_labels"][:, 0] == 0] for s in seen])
    expected, _ = np.histogram(images, UINT8_EDGES)
    assert inten["groups"]["malignant"]["counts"] == expected.tolist()
    assert inten["groups"]["malignant"]["mean"] == pytest.approx(images.mean(), rel=1e-5)
    assert [len(t) for t in ex.montage.values()] == [3, 3]
    json_path, html_path = write_explorer(ex, tmp_path)
    assert json.loads(json_path.read_text()) == ex.summary
    assert_page_numbers_in_json(html_path.read_text(), ex.summary)


def test_planted_duplicates_and_middle_slice_of_3d(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 5, 8, 8), dtype=np.uint8)
              for s, n in (("train", 6), ("val", 3), ("test", 3))}  # fmt: skip
    arrays["val_images"][0] = arrays["train_images"][2]  # across splits
    arrays["train_images"][4] = arrays["train_images"][1]  # within a split
    for s, n in (("train", 6), ("val", 3), ("test", 3)):
        arrays[f"{s}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    arrays["test_images"][1, 2] = 77  # the middle slice of test item 1 (label 1): all 77
    npz = tmp_path / "toy3d.npz"
    np.savez(npz, **arrays)
    ex = explore_source(npz, max_images=100, per_label=10)
    dup = ex.summary["duplicates"]
    assert (dup["within_splits"], dup["across_splits"]) == (1, 1)
    assert dup["pairs"] == [{"splits": ["train", "val"], "contents": 1}]
    assert ex.summary["slices_per_series"]["volume"]["counts"] == {"5": 12}
    tiles = [t for t, split in ex.montage["class 1"] if split == "test"]
    assert any((t == 77).all() and t.shape == (8, 8) for t in tiles)


# --------------------------------------------------------------------------- labelled folder


def write_leaky_folder(root: Path) -> tuple[Path, np.ndarray]:
    """PNG scans, two findings, patients P000-P009, P003 in train AND val, a PatientName."""
    rng = np.random.default_rng(1)
    (root / "img").mkdir(parents=True)
    rows, labels = [], []
    for i in range(30):
        patient = i // 3
        split = "train" if patient < 6 else "val" if patient < 8 else "test"
        if i == 11:  # the third scan of P003 went to val: a leak
            split = "val"
        y = [int(rng.random() < 0.5), int(rng.random() < 0.3)]
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(root / f"img/{i}.png")
        rows.append([f"img/{i}.png", *y, f"P{patient:03d}", split, "DOE^JANE"])
        labels.append(y)
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "effusion", "nodule", "patient_id", "split", "PatientName"])
        writer.writerows(rows)
    return root, np.array(labels)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root, labels = write_leaky_folder(tmp_path_factory.mktemp("leaky") / "scans")
    ex = explore_source(root, max_images=12, per_label=2, salt="pepper")
    out = tmp_path_factory.mktemp("leaky_out")
    json_path, html_path = write_explorer(ex, out)
    return {"root": root, "labels": labels, "ex": ex, "json": json_path, "html": html_path}


def test_folder_overlap_is_flagged_with_counts(leaky: dict[str, Any]) -> None:
    pat = leaky["ex"].summary["patients"]
    assert pat["checked"] and pat["total"] == 10
    assert pat["per_split"]["train"] == {"distinct": 6, "entries": 17}
    assert pat["overlap"]["distinct"] == 1 and pat["overlap"]["entries"] == 3
    assert pat["overlap"]["pairs"] == [
        {"splits": ["train", "val"], "distinct": 1, "entries": {"train": 2, "val": 1}}
    ]
    assert pat["overlap"]["shared_ids"] == [hash_id("P003", "pepper")]
    page = leaky["html"].read_text()
    alarm = page.index("PATIENT OVERLAP BETWEEN SPLITS: 1 patient (3 scans)")
    assert alarm < page.index("<h2>Counts</h2>")  # at the top, before any section
    assert "#cc0000" in page[page.rfind("<div", 0, alarm) : alarm]
    assert_page_numbers_in_json(page, leaky["ex"].summary)


def test_folder_counts_and_cooccurrence_match_the_csv(leaky: dict[str, Any]) -> None:
    y = leaky["labels"]
    s = leaky["ex"].summary
    assert s["source"]["task"] == "multilabel" and s["counts"]["total"] == 30
    co = s["cooccurrence"]
    assert co["labels"] == ["effusion", "nodule"] and co["matrix"] == (y.T @ y).tolist()
    both = sum(v["labels"]["effusion"] for v in s["counts"]["splits"].values())
    assert both == int(y[:, 0].sum())
    none = sum(v["labels"]["no finding"] for v in s["counts"]["splits"].values())
    assert none == int((y.sum(axis=1) == 0).sum())


def test_no_patient_identity_in_folder_outputs(leaky: dict[str, Any]) -> None:
    for path in (leaky["json"], leaky["html"]):
        text = path.read_text()
        assert "DOE^JANE" not in text and "DOE" not in text
        assert not re.search(r"P00\d", text), f"a raw patient id leaked into {path.name}"
        assert "img/" not in text  # no file names either
    assert leaky["ex"].summary["privacy"]["refused_columns"] == ["PatientName"]


def test_show_ids_lists_the_raw_id(leaky: dict[str, Any]) -> None:
    ex = explore_source(leaky["root"], max_images=2, show_ids=True)
    assert ex.summary["patients"]["overlap"]["shared_ids"] == ["P003"]
    assert "P003" in render_explorer(ex)


# --------------------------------------------------------------------------- DICOM tables


def test_rsna_table_counts_metadata_and_hu(rsna_dir: Path, tmp_path: Path) -> None:
    table = tmp_path / "rsna.parquet"
    build_dicom_table(rsna_dir, table, workers=1)
    ex = explore_source(table, root=rsna_dir, max_images=6, pixels_per_image=512 * 512)
    s = ex.summary
    assert s["counts"]["total"] == 100 and s["patients"]["total"] == 99  # per the README
    assert not s["patients"]["checked"]  # one split: nothing to overlap
    assert sum(int(k) * v for k, v in s["slices_per_series"]["series"]["counts"].items()) == 100
    bits = s["metadata"]["columns"]["BitsStored"]["counts"]
    assert bits == {"16": 61, "12": 39}  # README: 61 files 16-bit, 39 files 12-bit
    inten = s["intensity"]
    assert inten["unit"] == "HU" and inten["edges"] == HU_EDGES.tolist()
    group = inten["groups"]["Modality CT"]
    assert group["images"] == 6 and group["pixels"] == 6 * 512 * 512
    assert group["below"] + sum(group["counts"]) + group["above"] == group["pixels"]
    page = render_explorer(ex)
    ids = pd.read_parquet(table)["PatientID"]
    assert not any(pid in page for pid in ids)  # anonymised ids are still ids: never shown
    assert_page_numbers_in_json(page, s)


@pytest.fixture(scope="module")
def ct_table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Generated CT series in a table exported WITH identity (--keep-phi), split by patient
    except one patient whose series sits in both train and test."""
    base = tmp_path_factory.mktemp("ct")
    generate_ct_dataset(base / "dicom", 4, slices_per_patient=3, size=32, seed=3)
    (base / "dicom" / "labels.csv").unlink()
    path = base / "meta.parquet"
    frame = build_dicom_table(base / "dicom", path, keep_phi=True).table
    patients = sorted(frame["PatientID"].unique())
    split = frame["PatientID"].map({patients[0]: "train", patients[1]: "train",
                                    patients[2]: "val", patients[3]: "test"})  # fmt: skip
    split[frame.index[frame["PatientID"] == patients[0]][0]] = "test"
    frame.assign(split=split).to_parquet(path)
    return {"root": base / "dicom", "path": path, "frame": frame, "patients": patients}


def test_table_with_phi_is_refused_and_overlap_flagged(
    ct_table: dict[str, Any], tmp_path: Path
) -> None:
    frame = ct_table["frame"]
    assert "PatientName" in frame and frame["PatientName"].eq("Phantom^Test").all()  # planted
    ex = explore_source(
        ct_table["path"], root=ct_table["root"], max_images=50, pixels_per_image=32 * 32
    )
    refused = set(ex.summary["privacy"]["refused_columns"])
    assert {"PatientName", "PatientBirthDate", "InstitutionName"} <= refused
    json_path, html_path = write_explorer(ex, tmp_path)
    for path in (json_path, html_path):
        text = path.read_text()
        for secret in ("Phantom", "19700101", "Synthetic General Hospital", "CT_"):
            assert secret not in text, f"{secret!r} in {path.name}"
        assert not any(p in text for p in ct_table["patients"])
    ov = ex.summary["patients"]["overlap"]
    assert ov["distinct"] == 1 and ov["pairs"][0]["splits"] == ["train", "test"]
    assert "PATIENT OVERLAP BETWEEN SPLITS" in html_path.read_text()
    assert ex.summary["slices_per_series"]["series"]["counts"] == {"3": 4}
    assert ex.summary["counts"]["splits"]["train"]["series"] == 2


def test_table_hu_histogram_matches_pydicom_on_middle_slices(ct_table: dict[str, Any]) -> None:
    ex = explore_source(
        ct_table["path"], root=ct_table["root"], max_images=50, pixels_per_image=32 * 32
    )
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for path in sorted(ct_table["root"].rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    expected = np.zeros(len(HU_EDGES) - 1, dtype=int)
    for slices in by_series.values():
        ds = sorted(slices, key=lambda d: float(d.ImagePositionPatient[2]))[len(slices) // 2]
        hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
        expected += np.histogram(hu, HU_EDGES)[0]
    group = ex.summary["intensity"]["groups"]["Modality CT"]
    assert group["images"] == 4 and group["counts"] == expected.tolist()


def test_table_without_files_still_summarises(ct_table: dict[str, Any], tmp_path: Path) -> None:
    moved = tmp_path / "alone.parquet"
    shutil.copy(ct_table["path"], moved)
    ex = explore_source(moved)
    assert ex.summary["intensity"] == {} and not ex.montage
    assert any("--root" in n for n in ex.summary["notes"])
    assert ex.summary["metadata"]["columns"]["KVP"]["counts"] == {"120": 12}


# --------------------------------------------------------------------------- MRNet


def test_mrnet_counts_slices_and_exam_overlap(tmp_path: Path) -> None:
    root = write_mrnet_fixture(tmp_path / "mrnet", 5, 3, size=32, seed=0)
    for plane in ("axial", "coronal", "sagittal"):  # exam 0000 copied into valid: a leak
        shutil.copy(root / f"train/{plane}/0000.npy", root / f"valid/{plane}/0000.npy")
    for finding in ("abnormal", "acl", "meniscus"):
        first = (root / f"train-{finding}.csv").read_text().splitlines()[0]
        with (root / f"valid-{finding}.csv").open("a") as fh:
            fh.write(first + "\n")
    ex = explore_source(root, max_images=8, per_label=1)
    s = ex.summary
    assert s["source"]["kind"] == "mrnet" == detect_kind(root)
    assert {k: v["n"] for k, v in s["counts"]["splits"].items()} == {"train": 5, "valid": 4}
    for split in ("train", "valid"):
        rows = list(csv.reader((root / f"{split}-acl.csv").open()))
        assert s["counts"]["splits"][split]["labels"]["acl"] == sum(int(r[1]) for r in rows)
    for plane in ("axial", "coronal", "sagittal"):
        depths = [np.load(p, mmap_mode="r").shape[0] for p in sorted(root.glob(f"*/{plane}/*.npy"))]
        got = s["slices_per_series"][plane]
        assert got["series"] == 9 and got["min"] == min(depths) and got["max"] == max(depths)
    ov = s["patients"]["overlap"]
    assert s["patients"]["kind"] == "exam" and ov["distinct"] == 1 and ov["entries"] == 2
    tile = ex.montage["abnormal"][0][0]
    assert tile.shape == (32, 96)  # the three planes' middle slices side by side
    assert "EXAM OVERLAP BETWEEN SPLITS" in render_explorer(ex)


# --------------------------------------------------------------------------- detection, errors


def test_detect_kind_and_bad_sources(tmp_path: Path) -> None:
    (tmp_path / "a.npz").write_bytes(b"")
    (tmp_path / "t.parquet").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    assert detect_kind(tmp_path / "a.npz") == "medmnist"
    assert detect_kind(tmp_path / "t.parquet") == "dicom-table"
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt"):
        detect_kind(tmp_path / "notes.txt")
    with pytest.raises(MissingFileError, match="nowhere"):
        explore_source(tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match=r"labels\.csv or pass --kind"):
        explore_source(tmp_path / "empty")
    with pytest.raises(DataSourceError, match=r"t\.parquet: not a readable Parquet"):
        explore_source(tmp_path / "t.parquet")


def test_phi_columns() -> None:
    columns = ["PatientName", "patient_name", "PatientBirthDate", "StudyDate", "PatientSex",
               "InstitutionName", "ManufacturerModelName", "Modality", "KVP", "label",
               "EchoTime", "PatientID"]  # fmt: skip
    assert phi_columns(columns) == columns[:6]


# --------------------------------------------------------------------------- the browser


@pytest.mark.browser
def test_explorer_renders_in_headless_chromium(leaky: dict[str, Any], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed at /usr/bin/chromium")
    shot = tmp_path / "explore.png"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,2000", leaky["html"].resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert rgb.shape[:2] == (2000, 1200)
    assert rgb.mean(axis=2).std() > 20  # not a blank page
    # the overlap alarm's red border (#cc0000) is drawn in the top of the page
    red = np.abs(rgb[:400] - [204, 0, 0]).max(axis=2) < 40
    assert red.sum() > 2000, f"only {red.sum()} alarm-red pixels at the top"
    # the inline bar chart decoded: matplotlib's first colour (#1f77b4)
    blue = (np.abs(rgb - [31, 119, 180]).max(axis=2) < 30).sum()
    assert blue > 500, f"only {blue} chart-blue pixels: inline figures did not render"
    if os.environ.get("DXKIT_SCREENSHOTS"):
        target = Path(os.environ["DXKIT_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / "explore_screenshot.png")

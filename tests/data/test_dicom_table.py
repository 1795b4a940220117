"""The DICOM metadata table: tags, no PHI by default, hashing, errors table, resuming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest

from dxkit.data.dicom_table import build_dicom_table, errors_path, hash_id
from dxkit.data.pseudonyms import SALT_FILE
from dxkit.data.synthetic import generate_ct_dataset, write_defect
from dxkit.io.dicom import PHI_KEYWORDS

DEFECTS = ("truncated", "not_dicom", "no_pixel_data", "unsupported_syntax")


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "dicom"
    generate_ct_dataset(root, 6, slices_per_patient=1, size=32, seed=1)
    (root / "labels.csv").unlink()
    for kind in DEFECTS:
        write_defect(root / "bad" / f"{kind}.dcm", kind)
    return root


def test_rows_errors_and_no_phi(tree, tmp_path) -> None:
    result = build_dicom_table(tree, tmp_path / "meta.parquet", pixel_stats=True)
    table = pd.read_parquet(tmp_path / "meta.parquet")
    errors = pd.read_parquet(errors_path(tmp_path / "meta.parquet"))
    assert len(table) == 6 and result.processed == 10
    assert sorted(errors["file"]) == sorted(f"bad/{k}.dcm" for k in DEFECTS)
    reasons = dict(zip(errors["file"], errors["reason"], strict=True))
    assert "truncated" in reasons["bad/truncated.dcm"]
    assert "not a DICOM file" in reasons["bad/not_dicom.dcm"]
    assert "no PixelData" in reasons["bad/no_pixel_data.dcm"]
    assert "1.2.840.10008.1.2.4.100" in reasons["bad/unsupported_syntax.dcm"]
    assert not set(table.columns) & set(PHI_KEYWORDS)
    assert not table.astype(str).apply(lambda c: c.str.contains("Phantom")).any(axis=None)
    # Tag values agree with pydicom, pixel stats with the pixels.
    row = table.iloc[0]
    ds = pydicom.dcmread(tree / row["file"])
    key = (tmp_path / SALT_FILE).read_text().strip()
    assert row["PatientID"] == hash_id(ds.PatientID, key) and row["Modality"] == "CT"
    assert list(row["ImagePositionPatient"]) == [float(v) for v in ds.ImagePositionPatient]
    assert row["KVP"] == 120 and row["BitsStored"] == 16 and row["RescaleIntercept"] == -1024
    hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert row["pixel_min"] == hu.min() and row["pixel_max"] == hu.max()
    assert row["brain_share"] == pytest.approx(((hu >= 0) & (hu <= 80)).mean())


def test_header_only_mode_still_catches_defects(tree, tmp_path) -> None:
    result = build_dicom_table(tree, tmp_path / "m.parquet", pixel_stats=False, workers=2)
    assert len(result.table) == 6 and len(result.errors) == 4
    assert "pixel_min" not in result.table.columns


def test_identifiers_are_keyed_pseudonyms_unless_keep_phi(tree, tmp_path) -> None:
    import pydicom

    phi = build_dicom_table(tree, tmp_path / "c.parquet", keep_phi=True).table
    assert (phi["PatientName"] == "Phantom^Test").all()
    assert (phi["PatientBirthDate"] == "19700101").all()
    assert not (tmp_path / SALT_FILE).exists()  # nothing to key in a clear export
    default = build_dicom_table(tree, tmp_path / "a.parquet").table
    key = (tmp_path / SALT_FILE).read_text().strip()
    assert len(key) == 64 and (tmp_path / SALT_FILE).stat().st_mode & 0o077 == 0
    assert default["PatientID"].tolist() == [hash_id(p, key) for p in phi["PatientID"]]
    assert default["PatientID"].str.fullmatch(r"[0-9a-f]{16}").all()
    assert not set(default["StudyInstanceUID"]) & set(phi["StudyInstanceUID"])
    assert "PatientName" not in default.columns and "PatientBirthDate" not in default.columns
    again = build_dicom_table(tree, tmp_path / "b.parquet").table  # same project, same key
    assert again["PatientID"].tolist() == default["PatientID"].tolist()
    other = tmp_path / "elsewhere" / "m.parquet"  # another project: another key
    assert not set(build_dicom_table(tree, other).table["PatientID"]) & set(default["PatientID"])
    # Nothing of the originals anywhere in the default table.
    originals = {str(pydicom.dcmread(tree / f).get(k)) for f in phi["file"]
                 for k in ("PatientID", "PatientName")}  # fmt: skip
    text = default.to_csv()
    assert originals and not [v for v in originals if v in text]


def test_resumes_and_keeps_finished_parts(tree, tmp_path, monkeypatch) -> None:
    import dxkit.data.dicom_table as dt

    out = tmp_path / "meta.parquet"
    real = dt._rows_for_chunk
    calls = {"n": 0}

    def interrupted(paths, root, options):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(paths, root, options)

    monkeypatch.setattr(dt, "_rows_for_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dicom_table(tree, out, chunk_size=3)
    parts = out.with_name(out.name + ".parts")
    assert parts.is_dir() and not out.exists()
    monkeypatch.setattr(dt, "_rows_for_chunk", real)
    result = build_dicom_table(tree, out, chunk_size=3)
    # Files sort as CT_*.dcm before bad/*: the first chunk held 3 good files.
    assert result.skipped == 3
    assert len(result.table) == 6 and len(result.errors) == 4
    assert not parts.exists()
    again = build_dicom_table(tree, out)
    assert again.skipped == 6 and again.processed == 4  # only the bad files are retried


def test_real_rsna_files(rsna_dir, tmp_path) -> None:
    table = build_dicom_table(rsna_dir, tmp_path / "m.parquet", pixel_stats=True).table
    assert len(table) == 100 and table["PatientID"].nunique() == 99
    assert (table["PixelRepresentation"] == 1).sum() == 61
    assert (table["pixel_min"] < -3000).sum() == 46
    multi = table["WindowCenter"].map(len) > 1
    assert (multi == (table["BitsStored"] == 12)).all()
    assert np.isfinite(table["slice_position"]).all()

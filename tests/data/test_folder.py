"""Labelled-folder source: tasks inferred from the CSV, patient splits, given splits, bad CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxkit.data.sources.folder import load_folder
from dxkit.data.splits import check_no_leakage
from dxkit.errors import DataSourceError, MissingFileError


def make_scans(root: Path, n: int, kind: str = "png") -> list[str]:
    """Write ``n`` small scans; return their paths relative to ``root``."""
    rng = np.random.default_rng(0)
    (root / "scans").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rel = f"scans/s{i:03d}.{kind}"
        pixels = rng.integers(0, 256, (16, 20), dtype=np.uint8)
        if kind == "png":
            Image.fromarray(pixels).save(root / rel)
        else:
            np.save(root / rel, pixels.astype(np.float32))
        names.append(rel)
    return names


def write_csv(root: Path, header: str, rows: list[str], name: str = "labels.csv") -> Path:
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_binary_with_patients_is_split_by_patient(tmp_path: Path) -> None:
    names = make_scans(tmp_path, 40)
    patients = [f"P{i // 2:02d}" for i in range(40)]  # two scans per patient
    labels = [int(p[1:]) % 3 == 0 for p in patients]
    rows = [f"{n},{int(y)},{p}" for n, y, p in zip(names, labels, patients, strict=True)]
    write_csv(tmp_path, "path,pneumonia,patient_id", rows)
    data = load_folder(tmp_path, val_fraction=0.25, test_fraction=0.2, seed=1)

    assert data.task == "binary" and data.label_names == ["pneumonia"]
    assert (data.spatial_dims, data.in_chans, data.native_size) == (2, 1, 20)
    assert set(data.splits) == {"train", "val", "test"}
    assert sum(len(s) for s in data.splits.values()) == 40
    check_no_leakage(data.splits)
    seen = [set(s.groups) for s in data.splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert len(seen[1]) == 5 and len(seen[2]) == 4  # of 20 patients
    truth = dict(zip(names, labels, strict=True))
    for split in data.splits.values():
        assert all(isinstance(p, Path) and p.is_file() for p in split.items)
        assert split.ids is not None
        assert [bool(v) for v in split.labels[:, 0]] == [truth[i] for i in split.ids]
    again = load_folder(tmp_path, val_fraction=0.25, test_fraction=0.2, seed=1)
    assert again.splits["val"].ids == data.splits["val"].ids


def test_multiclass_names_are_sorted_and_one_hot(tmp_path: Path) -> None:
    names = make_scans(tmp_path, 12, kind="npy")
    classes = ["normal", "benign", "malignant"] * 4
    write_csv(tmp_path, "path,finding", [f"{n},{c}" for n, c in zip(names, classes, strict=True)])
    data = load_folder(tmp_path, val_fraction=0.25)
    assert data.task == "multiclass"
    assert data.label_names == ["benign", "malignant", "normal"]
    assert data.splits["train"].groups is None and "test" not in data.splits
    for split in data.splits.values():
        assert np.all(split.labels.sum(1) == 1)
        got = [data.label_names[k] for k in split.labels.argmax(1)]
        assert got == [classes[names.index(i)] for i in split.ids]


def test_integer_classes_and_multilabel(tmp_path: Path) -> None:
    names = make_scans(tmp_path, 9)
    write_csv(tmp_path, "path,grade", [f"{n},{i % 3}" for i, n in enumerate(names)], "a.csv")
    data = load_folder(tmp_path, csv=tmp_path / "a.csv", val_fraction=0.34)
    assert data.task == "multiclass" and data.label_names == ["0", "1", "2"]

    rows = [f"{n},{i % 2},{int(i % 3 == 0)}" for i, n in enumerate(names)]
    write_csv(tmp_path, "path,effusion,edema", rows, "b.csv")
    data = load_folder(tmp_path, csv=tmp_path / "b.csv", val_fraction=0.34)
    assert data.task == "multilabel" and data.label_names == ["effusion", "edema"]
    for split in data.splits.values():
        for row, rel in zip(split.labels, split.ids, strict=True):
            i = names.index(rel)
            assert row.tolist() == [i % 2, int(i % 3 == 0)]


def test_split_column_is_honoured(tmp_path: Path) -> None:
    names = make_scans(tmp_path, 6)
    splits = ["train", "train", "val", "Test", "train", "validation"]
    rows = [f"{n},{i % 2},{s}" for i, (n, s) in enumerate(zip(names, splits, strict=True))]
    write_csv(tmp_path, "path,label,split", rows)
    data = load_folder(tmp_path, val_fraction=0.5)
    assert data.splits["train"].ids == [names[0], names[1], names[4]]
    assert data.splits["val"].ids == [names[2], names[5]]
    assert data.splits["test"].ids == [names[3]]


def test_split_column_with_a_patient_in_two_splits(tmp_path: Path) -> None:
    names = make_scans(tmp_path, 4)
    rows = [f"{names[0]},0,A,train", f"{names[1]},1,A,val", f"{names[2]},0,B,train",
            f"{names[3]},1,C,val"]  # fmt: skip
    write_csv(tmp_path, "path,label,patient_id,split", rows)
    with pytest.raises(DataSourceError, match=r"labels\.csv: .*train/val: 1 patient\(s\) \(A\)"):
        load_folder(tmp_path)


def test_absent_files_are_listed_with_count(tmp_path: Path) -> None:
    names = make_scans(tmp_path, 3)
    rows = [f"{n},{i % 2}" for i, n in enumerate(names)]
    rows += [f"scans/gone{i}.png,1" for i in range(7)]
    write_csv(tmp_path, "path,label", rows)
    with pytest.raises(DataSourceError, match=r"7 of 10 listed scans do not exist .*row 5: "
                       r"scans/gone0\.png.*, \.\.\.\)"):  # fmt: skip
        load_folder(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"the file is empty"),
        ("path,label\n", r"has a header but no rows"),
        ("file,label\na.png,1\n", r"no 'path' column \(header: file, label\)"),
        ("path,patient_id\n{0},P1\n", r"no label column"),
        ("path,label\n{0},1\n{1},yes\n", r"row 3, column 'label' = 'yes' is not a number"),
        ("path,a,b\n{0},1,0\n{1},2,1\n", r"row 3, column 'a' = 2; .*0 or 1"),
        ("path,label\n{0},0.5\n{1},1\n", r"row 2, column 'label' = 0.5 is neither"),
        ("path,label\n{0},\n{1},1\n", r"row 2 has no value in label column 'label'"),
        ("path,label\n{0},benign\n{1},benign\n", r"single class 'benign'"),
        ("path,label,split\n{0},1,train\n{1},0,holdout\n", r"row 3, column 'split' = 'holdout'"),
    ],
)
def test_bad_csv_names_file_row_and_fix(tmp_path: Path, content: str, message: str) -> None:
    names = make_scans(tmp_path, 2)
    (tmp_path / "labels.csv").write_text(content.format(*names))
    with pytest.raises(DataSourceError, match=r"labels\.csv: .*" + message):
        load_folder(tmp_path)


def test_missing_folder_or_csv(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no such folder"):
        load_folder(tmp_path / "absent")
    make_scans(tmp_path, 2)
    with pytest.raises(MissingFileError, match=r"no labels\.csv and 0 other CSV files"):
        load_folder(tmp_path)
    with pytest.raises(MissingFileError, match=r"other\.csv: label CSV not found"):
        load_folder(tmp_path, csv=tmp_path / "other.csv")


def test_generated_dicom_folder(tmp_path: Path) -> None:
    from dxkit.data.synthetic import generate_ct_dataset

    csv = generate_ct_dataset(tmp_path, n_patients=6, slices_per_patient=3, size=32, seed=2)
    data = load_folder(tmp_path, csv=csv, val_fraction=0.3, input_kind="hounsfield")
    assert data.task == "binary" and data.label_names == ["lesion"]
    assert (data.spatial_dims, data.in_chans, data.native_size) == (2, 1, 32)
    assert data.input_kind == "hounsfield"
    check_no_leakage(data.splits)
    assert len(set(data.splits["val"].groups)) == 2 and len(data.splits["val"]) == 6

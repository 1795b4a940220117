"""Issue 15, findings 1 and 3: the folder source chooses size/channels from all scans and
reads class folders and id-column CSVs without a hand-made label file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxkit.data.scan_survey import survey_scans
from dxkit.data.sources.folder import load_folder
from dxkit.errors import DataSourceError
from dxkit.train.config import config_from_dict
from dxkit.train.sources import build_preprocessing, load_source


def _png(path: Path, h: int, w: int, mode: str = "L", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)


def test_size_comes_from_the_distribution_not_the_first_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The first file (000.png) is 821×957, the rest much smaller: the old code took 957.
    _png(tmp_path / "000.png", 821, 957)
    sides = [140, 180, 200, 220, 240, 260, 300, 320, 500]
    for i, s in enumerate(sides, 1):
        _png(tmp_path / f"{i:03d}.png", s, s, "RGBA" if i % 3 == 0 else "L", seed=i)
    rows = [f"{i:03d}.png,{i % 2}" for i in range(10)]
    (tmp_path / "labels.csv").write_text("path,finding\n" + "\n".join(rows) + "\n")
    data = load_folder(tmp_path)
    expected = min(int(np.median([957, *sides])), 256)
    assert data.native_size == expected == 250
    assert data.in_chans == 3  # RGBA among grey: one rule, colour wins, alpha dropped
    cfg = config_from_dict(
        {"name": "t", "data": {"source": "folder", "path": str(tmp_path)}, "model": {}}
    )
    with caplog.at_level(logging.INFO, logger="dxkit.train.sources"):
        pre = build_preprocessing(cfg, data)
    assert pre.size == 250 and pre.in_chans == 3
    assert "resizing 140–957 px images to 250" in caplog.text


def test_size_cap_and_explicit_size(tmp_path: Path) -> None:
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        _png(paths[-1], 600, 700 + i)
    survey = survey_scans(paths)
    assert survey.default_size() == 256 and survey.in_chans == 1
    assert survey.size_range == (700, 703)


def _class_tree(root: Path, splits: bool) -> None:
    for s, split in enumerate(["train", "valid", "test"] if splits else [""]):
        for c, cls in enumerate(["0_normal", "1_abnormal"]):
            for i in range(6):
                _png(root / split / cls / f"img{i}.png", 12, 14, seed=100 * s + 10 * c + i)


def test_class_folders_with_split_folders(tmp_path: Path) -> None:
    _class_tree(tmp_path, splits=True)
    data = load_folder(tmp_path)
    assert set(data.splits) == {"train", "val", "test"}
    assert data.label_names == ["0_normal", "1_abnormal"]
    assert all(len(s) == 12 for s in data.splits.values())
    for split in data.splits.values():
        assert split.ids is not None
        for rel, y in zip(split.ids, split.labels, strict=True):
            assert rel.split("/")[1] == data.label_names[int(np.argmax(y))]


def test_class_folders_without_split_folders_are_split_by_dxkit(tmp_path: Path) -> None:
    _class_tree(tmp_path, splits=False)
    data = load_folder(tmp_path, val_fraction=0.25)
    assert {"train", "val"} <= set(data.splits)
    assert sum(len(s) for s in data.splits.values()) == 12


def test_id_column_with_zero_padded_file_names(tmp_path: Path) -> None:
    for i in range(8):
        _png(tmp_path / "head_ct" / f"{i:03d}.png", 10, 10, seed=i)
    rows = [f"{i},{i % 2}" for i in range(8)]
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n" + "\n".join(rows) + "\n")
    cfg = config_from_dict(
        {
            "name": "t",
            "data": {"source": "folder", "path": str(tmp_path), "id_column": "id"},
        }
    )
    data = load_source(cfg)
    assert data.label_names == ["hemorrhage"] and data.task == "binary"
    ids = [i for s in data.splits.values() for i in (s.ids or [])]
    assert sorted(ids) == [f"head_ct/{i:03d}.png" for i in range(8)]
    explicit = load_folder(tmp_path, id_column="id", path_pattern="head_ct/{id:03d}.png")
    assert explicit.label_names == ["hemorrhage"]
    with pytest.raises(DataSourceError, match="path_pattern"):
        load_folder(tmp_path, id_column="id", path_pattern="{id}.png")


def test_layout_keys_are_validated() -> None:
    from dxkit.errors import ConfigError

    with pytest.raises(ConfigError, match="layout"):
        config_from_dict({"name": "t", "data": {"source": "folder", "layout": "zip"}})
    with pytest.raises(ConfigError, match=r"unknown key 'data\.id_col'"):
        config_from_dict({"name": "t", "data": {"source": "folder", "id_col": "id"}})


def test_dicom_patient_ids_group_the_split_hashed(tmp_path: Path) -> None:
    """A DICOM tree without a patient_id column is split by the (hashed) PatientID."""
    from dxkit.data.splits import check_no_leakage
    from dxkit.data.synthetic import write_ct_slice

    rng = np.random.default_rng(0)
    for y, cls in enumerate(["no_bleed", "bleed"]):
        for i in range(16):
            patient = f"PAT{y}{i // 2}"  # two slices per patient
            write_ct_slice(
                tmp_path / cls / f"{i}.dcm",
                rng.normal(30, 5, (12, 12)).astype(np.float32),
                patient_id=patient,
                study_uid=f"1.2.{y}.{i // 2}",
                series_uid=f"1.2.{y}.{i // 2}.1",
                instance_number=i % 2 + 1,
                position_z=float(i % 2),
            )
    data = load_folder(tmp_path, val_fraction=0.25, test_fraction=0.25)
    groups = np.concatenate([s.groups for s in data.splits.values()])  # type: ignore[misc]
    assert len(set(groups)) == 16 and not any(g.startswith("PAT") for g in groups)
    check_no_leakage(data.splits)  # no patient in two splits

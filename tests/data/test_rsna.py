"""RSNA labels (long CSV → six columns), the weighted log loss, and the patient split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss

from dxkit.data.ct_cache import CacheRecipe, prepare_ct_cache
from dxkit.data.sources.rsna import (
    RSNA_LABELS,
    load_rsna,
    parse_rsna_labels,
    weighted_log_loss,
)
from dxkit.data.synthetic import generate_ct_dataset
from dxkit.errors import DataSourceError, MissingFileError


def _long_csv(path, wide: dict[str, list[int]]) -> None:
    rows = [
        (f"{image}_{name}", value)
        for image, values in wide.items()
        for name, value in zip(RSNA_LABELS, values, strict=True)
    ]
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(path, index=False)


def test_parse_long_csv(tmp_path) -> None:
    _long_csv(
        tmp_path / "l.csv",
        {"ID_63eb1e259": [0, 0, 0, 0, 1, 1], "ID_2669954a7": [0, 0, 0, 0, 0, 0]},
    )
    with (tmp_path / "l.csv").open("a") as fh:
        fh.write("ID_63eb1e259_subdural,1\n")  # the real file repeats some rows
    wide = parse_rsna_labels(tmp_path / "l.csv")
    assert list(wide.columns) == RSNA_LABELS
    assert wide.loc["ID_63eb1e259"].tolist() == [0, 0, 0, 0, 1, 1]
    assert wide.loc["ID_2669954a7", "any"] == 0 and len(wide) == 2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ID,Label\nID_a_epidural,0\n", "lack some of the six"),
        ("ID,Label\nID_a_hematoma,1\n", "unknown subtypes"),
        ("ID,Label\nID_a_any,2\n", "not 0 or 1"),
        ("image,label\nID_a_any,1\n", "expected header"),
    ],
)
def test_bad_label_files(tmp_path, text, match) -> None:
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DataSourceError, match=match):
        parse_rsna_labels(tmp_path / "l.csv")


def test_weighted_log_loss_against_sklearn_and_hand() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 6))
    p = rng.uniform(0.02, 0.98, (40, 6))
    per_label = [log_loss(y[:, k], p[:, k], labels=[0, 1]) for k in range(6)]
    expected = (sum(per_label[:5]) + 2 * per_label[5]) / 7
    assert weighted_log_loss(y, p) == pytest.approx(expected, rel=1e-12)
    # One image, hand-computed: all p = 0.5 except any = 0.9 with any = 1.
    hand = (5 * np.log(2) + 2 * -np.log(0.9)) / 7
    assert weighted_log_loss(
        np.array([[0, 0, 0, 0, 0, 1]]), np.array([[0.5] * 5 + [0.9]])
    ) == pytest.approx(hand)


def test_load_rsna_from_prepared_cache(tmp_path) -> None:
    generate_ct_dataset(tmp_path / "dcm", 20, size=64, positive_fraction=0.5, seed=2)
    table = pd.read_csv(tmp_path / "dcm" / "labels.csv")
    rng = np.random.default_rng(0)
    wide = {}
    for path, lesion in zip(table["path"], table["lesion"], strict=True):
        subtypes = [0] * 5
        if lesion:
            subtypes[rng.integers(5)] = 1
        wide[path.removesuffix(".dcm")] = [*subtypes, int(lesion)]
    _long_csv(tmp_path / "stage_2_train.csv", wide)
    labels = parse_rsna_labels(tmp_path / "stage_2_train.csv")
    recipe = CacheRecipe.build(["brain", "bone"], size=32, min_brain_share=0.0)
    prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe, labels=labels)
    data = load_rsna(tmp_path / "cache", val_fraction=0.25, seed=0, test_fraction=0.0)
    assert data.task == "multilabel" and data.label_names == RSNA_LABELS
    assert data.in_chans == 2 and data.native_size == 32 and data.input_kind == "uint8"
    assert sorted(data.splits) == ["train", "val"]  # test_fraction 0: no test split
    train, val = data.splits["train"], data.splits["val"]
    assert len(train) + len(val) == 20 and len(val) > 0
    assert not set(train.groups) & set(val.groups)
    for split in (train, val):
        for item, ident, row in zip(split.items, split.ids, split.labels, strict=True):
            assert np.load(item).shape == (2, 32, 32)
            assert row.tolist() == wide[ident]
    assert val.labels[:, -1].sum() > 0  # stratified: positives on both sides
    # The same cache packed into a slice store gives the same splits and the same inputs,
    # streamed through ScanDataset without the in-memory cache.
    from dxkit.data.dataset import ScanDataset
    from dxkit.data.slice_store import pack_cache
    from dxkit.preprocess.spec import Preprocessing

    pack_cache(tmp_path / "cache", tmp_path / "store", shard_size=8)
    packed = load_rsna(tmp_path / "store", val_fraction=0.25, seed=0, test_fraction=0.0)
    assert packed.in_chans == 2 and packed.extra == data.extra
    pre = Preprocessing(in_chans=2, input_kind="uint8", mean=[0.0, 0.0], std=[1.0, 1.0])
    for name, split in data.splits.items():
        other = packed.splits[name]
        assert other.ids == split.ids and (other.labels == split.labels).all()
        assert (other.groups == split.groups).all()
        streamed = ScanDataset(other, pre, cache=False)
        for i, item in enumerate(split.items):
            expected = torch.from_numpy(np.load(item).astype(np.float32) / 255.0)
            torch.testing.assert_close(streamed[i][0], expected, rtol=0, atol=1e-7)


def test_load_rsna_holds_out_test_patients(tmp_path) -> None:
    # 12 patients × 3 slices: train/val/test must be disjoint sets of patients, together
    # every slice once, and the test patients must not move when only val_fraction does.
    table = pd.read_csv(
        generate_ct_dataset(
            tmp_path / "dcm", 12, slices_per_patient=3, size=48, positive_fraction=0.5, seed=4
        )
    )
    wide = {
        p.removesuffix(".dcm").replace("/", "__"): [0, int(b), 0, 0, 0, int(b)]
        for p, b in zip(table["path"], table["lesion"], strict=True)
    }
    _long_csv(tmp_path / "labels.csv", wide)
    recipe = CacheRecipe.build(["brain"], size=16, min_brain_share=0.0)
    labels = parse_rsna_labels(tmp_path / "labels.csv")
    prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", recipe, labels=labels)
    data = load_rsna(tmp_path / "cache", val_fraction=0.25, seed=0, test_fraction=0.25)
    splits = data.splits
    assert sorted(splits) == ["test", "train", "val"]
    patients = {name: set(s.groups) for name, s in splits.items()}
    assert all(patients.values())
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert sum(len(s) for s in splits.values()) == 36
    assert len(patients["test"]) == 3  # 25 % of 12 patients, every slice of each
    other = load_rsna(tmp_path / "cache", val_fraction=0.4, seed=0, test_fraction=0.25)
    assert set(other.splits["test"].ids) == set(splits["test"].ids)


def test_load_rsna_needs_two_patients(tmp_path) -> None:
    generate_ct_dataset(tmp_path / "dcm", 1, slices_per_patient=4, size=32, seed=0)
    table = pd.read_csv(tmp_path / "dcm" / "labels.csv")
    wide = {p.removesuffix(".dcm").replace("/", "__"): [0] * 6 for p in table["path"]}
    _long_csv(tmp_path / "labels.csv", wide)
    prepare_ct_cache(
        tmp_path / "dcm",
        tmp_path / "cache",
        CacheRecipe.build(size=16, min_brain_share=0.0),
        labels=parse_rsna_labels(tmp_path / "labels.csv"),
    )
    with pytest.raises(DataSourceError, match="one patient"):
        load_rsna(tmp_path / "cache")


def test_load_rsna_needs_a_labelled_cache(tmp_path) -> None:
    with pytest.raises(MissingFileError, match="prepare rsna"):
        load_rsna(tmp_path)
    generate_ct_dataset(tmp_path / "dcm", 4, size=32, seed=0)
    prepare_ct_cache(tmp_path / "dcm", tmp_path / "cache", CacheRecipe.build(size=16))
    with pytest.raises(DataSourceError, match="--labels"):
        load_rsna(tmp_path / "cache")

"""Splits: partitions, fractions, stratification, patients in one split only, repeatability."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dxkit.data.source import LabelledSet
from dxkit.data.splits import check_no_leakage, split_indices, stratification_key
from dxkit.errors import ConfigError, DataSourceError


def assert_partition(splits: dict[str, np.ndarray], n: int) -> None:
    joined = np.concatenate(list(splits.values()))
    assert sorted(joined.tolist()) == list(range(n)), "splits must cover every scan exactly once"


def assert_patients_apart(splits: dict[str, np.ndarray], groups: np.ndarray) -> None:
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(groups[splits[a]]) & set(groups[splits[b]]), (a, b)


def test_scan_level_split_is_stratified_and_sized() -> None:
    labels = np.r_[np.zeros(150), np.ones(50)].astype(np.float32)[:, None]
    splits = split_indices(200, labels, fractions=(0.2, 0.1), seed=3)
    assert_partition(splits, 200)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [140, 40, 20]
    # Stratified: each split keeps the 25 % positive share (to within one scan).
    assert abs(labels[splits["val"]].sum() - 10) <= 1
    assert abs(labels[splits["test"]].sum() - 5) <= 1


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = np.random.default_rng(0).integers(0, 2, 100)
    a = split_indices(100, labels, fractions=(0.2, 0.2), seed=7)
    b = split_indices(100, labels, fractions=(0.2, 0.2), seed=7)
    c = split_indices(100, labels, fractions=(0.2, 0.2), seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["val"], c["val"])


def test_test_set_does_not_move_with_val_fraction() -> None:
    labels = np.random.default_rng(1).integers(0, 2, 120)
    a = split_indices(120, labels, fractions=(0.1, 0.2), seed=0)
    b = split_indices(120, labels, fractions=(0.3, 0.2), seed=0)
    np.testing.assert_array_equal(a["test"], b["test"])


def test_grouped_split_keeps_patients_apart_and_stratifies() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat([f"P{i:03d}" for i in range(100)], rng.integers(1, 5, 100))
    patient_label = {g: int(g[1:]) % 4 == 0 for g in np.unique(groups)}  # 25 % positive patients
    labels = np.array([patient_label[g] for g in groups], dtype=np.float32)[:, None]
    splits = split_indices(len(groups), labels, groups, fractions=(0.2, 0.15), seed=0)
    assert_partition(splits, len(groups))
    assert_patients_apart(splits, groups)
    n_patients = {k: len(set(groups[v])) for k, v in splits.items()}
    assert 15 <= n_patients["val"] <= 25 and 10 <= n_patients["test"] <= 20
    for name in ("val", "test"):
        share = labels[splits[name]].mean()
        assert 0.1 < share < 0.4, (name, share)


def test_grouped_split_without_labels() -> None:
    groups = np.repeat(np.arange(30), 3)
    splits = split_indices(90, groups=groups, fractions=(0.2, 0.0), seed=5)
    assert_patients_apart(splits, groups)
    assert len(splits["test"]) == 0 and len(set(groups[splits["val"]])) == 6


def test_rare_class_falls_back_to_random_split(caplog) -> None:
    labels = np.r_[np.zeros(19), np.ones(1)]
    splits = split_indices(20, labels, fractions=(0.25, 0.0), seed=0)
    assert_partition(splits, 20)
    assert len(splits["val"]) == 5 and "not stratified" in caplog.text


def test_stratification_key_of_one_hot_and_multilabel() -> None:
    one_hot = np.eye(3, dtype=np.float32)[[2, 0, 1, 2]]
    np.testing.assert_array_equal(stratification_key(one_hot), [2, 0, 1, 2])
    multilabel = np.array([[1, 1], [0, 1], [1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(stratification_key(multilabel), [1, 0, 1])


def test_bad_fractions_and_too_few_patients() -> None:
    with pytest.raises(ConfigError, match="leaves no scans to train on"):
        split_indices(10, fractions=(0.6, 0.4))
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        split_indices(10, fractions=(-0.1, 0.0))
    with pytest.raises(DataSourceError, match=r"cannot hold out 20% of 1 patient\(s\)"):
        split_indices(10, groups=np.zeros(10), fractions=(0.2, 0.0))
    with pytest.raises(DataSourceError, match="groups has 9 entries for 10 scans"):
        split_indices(10, groups=np.zeros(9), fractions=(0.2, 0.0))


def test_check_no_leakage_lists_patients() -> None:
    groups = np.array(["a", "a", "b", "c", "c", "d"])
    check_no_leakage({"train": np.array([0, 1, 2]), "val": np.array([3, 4, 5])}, groups)
    with pytest.raises(DataSourceError, match=r"train/val: 1 patient\(s\) \(c\)"):
        check_no_leakage({"train": np.array([0, 1, 3]), "val": np.array([4, 5])}, groups)
    sets = {
        "train": LabelledSet(items=[], labels=np.zeros((2, 1)), groups=np.array(["x", "y"])),
        "test": LabelledSet(items=[], labels=np.zeros((1, 1)), groups=np.array(["y"])),
    }
    with pytest.raises(DataSourceError, match=r"train/test: 1 patient\(s\) \(y\)"):
        check_no_leakage(sets)


@settings(max_examples=25, deadline=None)
@given(
    n_patients=st.integers(5, 40),
    scans_per=st.integers(1, 4),
    val=st.sampled_from([0.1, 0.2, 0.3]),
    test=st.sampled_from([0.0, 0.1, 0.2]),
    seed=st.integers(0, 1000),
)
def test_any_grouped_split_is_a_leak_free_partition(
    n_patients: int, scans_per: int, val: float, test: float, seed: int
) -> None:
    groups = np.repeat(np.arange(n_patients), scans_per)
    labels = (groups % 3 == 0).astype(np.float32)
    splits = split_indices(len(groups), labels, groups, fractions=(val, test), seed=seed)
    assert_partition(splits, len(groups))
    assert_patients_apart(splits, groups)
    assert len(splits["train"]) > 0 and len(splits["val"]) > 0


def test_patient_with_any_positive_scan_counts_as_positive() -> None:
    # 40 patients × 5 scans; 8 patients have a single positive scan among five.
    groups = np.repeat(np.arange(40), 5)
    labels = np.zeros(200, dtype=np.float32)
    labels[np.arange(8) * 5 * 5 + 2] = 1.0  # patients 0, 5, 10, ..., 35: scan 2 positive
    splits = split_indices(200, labels, groups, fractions=(0.25, 0.0), seed=4)
    assert_patients_apart(splits, groups)
    positive_patients = set(groups[labels == 1])
    assert len(positive_patients & set(groups[splits["val"]])) == 2  # 8 × 0.25, stratified

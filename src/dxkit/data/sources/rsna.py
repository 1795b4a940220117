"""RSNA intracranial hemorrhage: the long label CSV, the prepared slice cache, the metric.

The competition file ``stage_2_train.csv`` has rows ``ID_<image>_<subtype>,Label``, six per
image. ``parse_rsna_labels`` pivots them to one row per image; ``load_rsna`` turns a cache
written by ``dxkit prepare rsna`` into a ``SourceData`` split into train/val/test by patient
(never the same patient in two splits, ``data.splits.split_indices``) and stratified on
``any``; the test patients are held out before validation is drawn, so nothing chosen on
validation (checkpoint, thresholds, calibration) has seen them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dxkit.data.slice_store import SliceRef, SliceStore
from dxkit.data.source import LabelledSet, SourceData
from dxkit.data.splits import split_indices
from dxkit.errors import DataSourceError, MissingFileError

logger = logging.getLogger(__name__)

RSNA_LABELS = [
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
    "any",
]
# Competition weights: ``any`` counts twice.
RSNA_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 2.0])


def parse_rsna_labels(csv_path: Path | str) -> pd.DataFrame:
    """The long ``ID,Label`` file → one row per image id (index), six int8 columns."""
    path = Path(csv_path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such label file (RSNA stage_2_train.csv)")
    long = pd.read_csv(path, dtype={"ID": str}, encoding="utf-8-sig")
    if list(long.columns[:2]) != ["ID", "Label"]:
        raise DataSourceError(
            f"{path}: expected header 'ID,Label', found {list(long.columns)}; "
            "is this the RSNA stage_2_train.csv?"
        )
    parts = long["ID"].str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2 or parts[1].isna().any():
        bad = long["ID"][parts.iloc[:, -1].isna()].iloc[0]
        raise DataSourceError(f"{path}: ID {bad!r} is not of the form ID_<image>_<subtype>")
    long = long.assign(image_id=parts[0], subtype=parts[1])
    unknown = sorted(set(long["subtype"]) - set(RSNA_LABELS))
    if unknown:
        raise DataSourceError(f"{path}: unknown subtypes {unknown}; expected {RSNA_LABELS}")
    labels = pd.to_numeric(long["Label"], errors="coerce")
    if labels.isna().any() or not labels.isin([0, 1]).all():
        bad = long["Label"][~labels.isin([0, 1])].iloc[0]
        raise DataSourceError(f"{path}: Label {bad!r} is not 0 or 1")
    # The real file repeats a few rows; identical duplicates are harmless, take the max.
    wide = (
        long.assign(Label=labels.astype(int))
        .pivot_table(index="image_id", columns="subtype", values="Label", aggfunc="max")
        .reindex(columns=RSNA_LABELS)
    )
    incomplete = wide.index[wide.isna().any(axis=1)]
    if len(incomplete):
        raise DataSourceError(
            f"{path}: {len(incomplete)} images lack some of the six labels, e.g. {incomplete[0]!r}"
        )
    wide.columns.name = None
    return wide.astype(np.int8)


def weighted_log_loss(
    y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray = RSNA_WEIGHTS, eps: float = 1e-15
) -> float:
    """The competition metric: per-image weighted mean of the six binary log losses, averaged.

    ``y_true`` and ``y_prob`` are ``(N, 6)`` in ``RSNA_LABELS`` order.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    w = np.asarray(weights, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2 or y.shape[1] != len(w):
        raise ValueError(f"need (N, {len(w)}) arrays, got {y.shape} and {p.shape}")
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.mean(losses @ w / w.sum()))


def load_rsna(
    cache_dir: Path | str, val_fraction: float = 0.2, seed: int = 0, test_fraction: float = 0.2
) -> SourceData:
    """A prepared RSNA cache (``dxkit prepare rsna --labels ...``) as train/val/test
    ``SourceData`` (``test_fraction`` 0: no test split).

    Items are paths of the cached uint8 ``(C, H, W)`` ``.npy`` slices; dropped slices are
    left out; groups are patient ids.
    """
    root = Path(cache_dir)
    index_path = root / "index.parquet"
    packed = (root / "store.json").is_file()  # a slice store written by pack_cache
    if packed:
        index_path = root / "manifest.parquet"
    if not index_path.is_file():
        raise MissingFileError(
            f"{index_path}: no prepared cache here; run `dxkit prepare rsna DICOM_DIR "
            f"--labels stage_2_train.csv --out {root}` first"
        )
    index = pd.read_parquet(index_path)
    if packed:
        index = index.rename(columns={"patient": "PatientID"})
    index = index[index["kept"]]
    missing = [c for c in RSNA_LABELS if c not in index.columns]
    if missing or index[RSNA_LABELS].isna().all(axis=None):
        raise DataSourceError(
            f"{index_path}: the cache has no labels; rerun prepare with --labels stage_2_train.csv"
        )
    unlabelled = index[RSNA_LABELS].isna().any(axis=1)
    if unlabelled.any():
        logger.warning("%s: %d slices have no labels, left out", index_path, int(unlabelled.sum()))
        index = index[~unlabelled]
    if len(index) < 2:
        raise DataSourceError(f"{index_path}: only {len(index)} labelled slices; need at least 2")
    # One order whatever wrote the table (a cache index or a packed store's manifest), so
    # the patient split is the same for both.
    index = index.sort_values("image_id", kind="stable").reset_index(drop=True)
    labels = index[RSNA_LABELS].to_numpy(np.float32)
    groups = index["PatientID"].astype(str).to_numpy()
    if len(np.unique(groups)) < 2:
        raise DataSourceError(
            f"{index_path}: all {len(groups)} slices belong to one patient; a patient-grouped "
            "split needs at least 2 patients — prepare more studies"
        )
    index_of = split_indices(
        len(index), labels[:, -1], groups, fractions=(val_fraction, test_fraction), seed=seed
    )
    items: list[Path] | list[SliceRef] = (
        [
            SliceRef(root, int(a), int(b))
            for a, b in zip(index["shard"], index["offset"], strict=True)
        ]
        if packed
        else [root / p for p in index["array"]]
    )

    def subset(rows: np.ndarray) -> LabelledSet:
        return LabelledSet(
            items=[items[i] for i in rows],
            labels=labels[rows],
            groups=groups[rows],
            ids=index["image_id"].iloc[rows].tolist(),
        )

    info = (
        json.loads((root / "prepare.json").read_text()) if (root / "prepare.json").is_file() else {}
    )
    recipe = info.get("recipe")
    if recipe is None:
        logger.warning(
            "%s: no prepare.json recipe; a model trained here cannot replay the cache's "
            "preprocessing on raw DICOM",
            root,
        )
    return SourceData(
        splits={name: subset(rows) for name, rows in index_of.items() if len(rows)},
        label_names=list(RSNA_LABELS),
        task="multilabel",
        spatial_dims=2,
        in_chans=int(info.get("channels", _first_shape(items[0])[0])),
        native_size=info.get("size"),
        input_kind="uint8",
        name="rsna_ich",
        extra={
            "windows": info.get("windows"),
            "context": info.get("context", False),
            # What the cache did to each HU slice, so the checkpoint can redo it at serving.
            "ct_recipe": None
            if recipe is None
            else {
                "windows": recipe["windows"],
                "window_names": info.get("windows"),
                "size": recipe["size"],
                "crop_head": True,
                "context": recipe["context"],
                "resize": recipe.get("resize", "pillow"),  # caches before the field: Pillow
            },
        },
    )


def _first_shape(item: Path | SliceRef) -> tuple[int, ...]:
    if isinstance(item, SliceRef):
        return SliceStore(item.store).shape
    return tuple(np.load(item, mmap_mode="r").shape)

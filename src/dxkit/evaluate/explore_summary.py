"""The explorer's summaries of a ``Catalog``: counts per split and label, patients shared
between splits, identical contents, co-occurrence, slices per series, intensities.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from dxkit.evaluate.explore_catalog import UNIT_8BIT, UNIT_HU, Catalog, Scan
from dxkit.evaluate.explore_privacy import hash_id

SPLIT_ORDER = ("train", "val", "valid", "test", "all")
HU_EDGES = np.arange(-1100.0, 3101.0, 25.0)  # air to dense bone; padding counts as "below"
UINT8_EDGES = np.arange(0.0, 257.0, 4.0)


def ordered_splits(names: Iterable[str]) -> list[str]:
    """Split names in reading order: train, val/valid, test, then any others."""
    unique = dict.fromkeys(str(n) for n in names)
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return sorted(unique, key=lambda s: (rank.get(s, len(rank)), s))


def label_groups(cat: Catalog) -> dict[str, np.ndarray]:
    """Entries per label group: each class (binary, multi-class) or each finding plus
    'no finding' (multi-label); one group 'all' without labels."""
    y = cat.labels
    if cat.task == "binary":
        names, label = cat.class_names, cat.label_names[0]
        if len(names) != 2 or names == ["0", "1"]:
            unnamed = label in ("0", "1")  # a MedMNIST-layout file dxkit does not know
            names = ["class 0", "class 1"] if unnamed else [f"{label} = 0", f"{label} = 1"]
        return {names[0]: np.flatnonzero(y[:, 0] < 0.5), names[1]: np.flatnonzero(y[:, 0] >= 0.5)}
    if cat.task == "multiclass":
        codes = y.argmax(axis=1)
        return {name: np.flatnonzero(codes == k) for k, name in enumerate(cat.class_names)}
    if cat.task == "multilabel":
        groups = {name: np.flatnonzero(y[:, k] >= 0.5) for k, name in enumerate(cat.label_names)}
        groups["no finding"] = np.flatnonzero((y < 0.5).all(axis=1))
        return groups
    return {"all": np.arange(len(cat.splits))}


def count_summary(cat: Catalog) -> dict[str, Any]:
    """Entries per split and per label group (count and share of the split)."""
    groups = label_groups(cat) if cat.labels.shape[1] else {}
    table = cat.table
    out: dict[str, Any] = {"item": cat.item, "total": len(cat.splits), "groups": list(groups)}
    splits = {}
    for split in ordered_splits(cat.splits):
        mask = cat.splits == split
        n = int(mask.sum())
        entry: dict[str, Any] = {"n": n}
        if groups:
            counts = {g: int(mask[idx].sum()) for g, idx in groups.items()}
            entry["labels"] = counts
            entry["share"] = {g: c / n for g, c in counts.items()}
        for column, key in (("StudyInstanceUID", "studies"), ("SeriesInstanceUID", "series")):
            if table is not None and column in table:
                entry[key] = int(table.loc[mask, column].nunique())
        splits[split] = entry
    out["splits"] = splits
    return out


def patient_summary(cat: Catalog, show_ids: bool, salt: str) -> dict[str, Any]:
    """Distinct patients (or exams) per split and every one found in more than one split.

    ``distinct`` counts ids, ``entries`` the scans (files, exams) that carry them. Shared ids
    appear hashed with ``salt`` unless ``show_ids``; other ids are never listed.
    """
    if cat.groups is None:
        return {"checked": False, "kind": cat.group_kind}
    blank = np.isin(np.char.strip(cat.groups.astype(str)), ["", "nan", "None"])
    if blank.all():  # an empty PatientID is a missing identity, not one patient
        return {
            "checked": False,
            "kind": cat.group_kind,
            "missing": int(blank.size),
            "note": f"{cat.group_kind} id empty in all {blank.size} {cat.item}s: identity "
            "missing, so overlap between splits cannot be checked",
        }
    names = ordered_splits(cat.splits)
    members = {s: cat.groups[(cat.splits == s) & ~blank] for s in names}
    per_split = {s: {"distinct": len(set(ids)), "entries": len(ids)} for s, ids in members.items()}
    pairs, overlapping = [], set()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = list(set(members[a]) & set(members[b]))
            if shared:
                overlapping.update(shared)
                entries = {s: int(np.isin(members[s], shared).sum()) for s in (a, b)}
                pairs.append({"splits": [a, b], "distinct": len(shared), "entries": entries})
    ids = sorted(overlapping) if show_ids else sorted(hash_id(v, salt) for v in overlapping)
    return {
        "checked": len(names) > 1,
        "kind": cat.group_kind,
        "total": len(set(cat.groups[~blank])),
        "missing": int(blank.sum()),
        "per_split": per_split,
        "overlap": {
            "distinct": len(overlapping),
            "entries": int(np.isin(cat.groups, list(overlapping)).sum()),
            "pairs": pairs,
            "shared_ids": ids[:100],
            "shared_ids_are": "as in the source (--show-ids)" if show_ids else "hashed",
        },
    }


def duplicate_summary(cat: Catalog) -> dict[str, Any]:
    """Identical contents (pixels, files or SOP instances) within and across splits."""
    if cat.fingerprints is None:
        return {"checked": False}
    frame = pd.DataFrame({"key": cat.fingerprints(), "split": cat.splits})
    within = int(frame.duplicated(["key", "split"]).sum())
    where = frame.groupby("key")["split"].agg(frozenset)
    across = where[where.map(len) > 1]
    names = ordered_splits(cat.splits)
    pairs = [
        {"splits": [a, b], "contents": int(sum(a in s and b in s for s in across))}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    return {
        "checked": True,
        "by": cat.fingerprint_by,
        "within_splits": within,
        "across_splits": len(across),
        "pairs": [p for p in pairs if p["contents"]],
    }


def cooccurrence(cat: Catalog) -> dict[str, Any] | None:
    """How often each pair of findings is positive together (multi-label only)."""
    if cat.task != "multilabel":
        return None
    y = (cat.labels >= 0.5).astype(np.int64)
    return {"labels": cat.label_names, "matrix": (y.T @ y).tolist(), "n": len(y)}


def slice_summary(cat: Catalog) -> dict[str, Any]:
    """Slices per series (per plane for MRNet): the distribution and its range."""
    out = {}
    for plane, counts in cat.slices.items():
        if not counts:
            continue
        values, freq = np.unique(np.asarray(counts), return_counts=True)
        out[plane] = {
            "series": len(counts),
            "min": int(values[0]),
            "median": float(np.median(counts)),
            "max": int(values[-1]),
            "counts": {str(int(v)): int(f) for v, f in zip(values, freq, strict=True)},
        }
    return out


def intensity_summary(samples: dict[str, list[tuple[int, Scan]]]) -> dict[str, Any]:
    """A histogram and statistics of the sampled intensities per label group: fixed HU bins
    for CT, 4-value bins for 0-255 data, 64 bins between the 0.5 and 99.5 percentiles else."""
    pooled = {
        g: np.concatenate([s.values for _, s in scans]) for g, scans in samples.items() if scans
    }
    if not pooled:
        return {}
    units = {s.unit for scans in samples.values() for _, s in scans}
    unit = units.pop() if len(units) == 1 else "mixed units"
    if unit == UNIT_HU:
        edges = HU_EDGES
    elif unit == UNIT_8BIT:
        edges = UINT8_EDGES
    else:
        lo, hi = np.percentile(np.concatenate(list(pooled.values())), [0.5, 99.5])
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 65)
    groups = {}
    for g, x in pooled.items():
        counts, _ = np.histogram(x, edges)
        p1, p50, p99 = np.percentile(x, [1, 50, 99])
        groups[g] = {
            "images": len(samples[g]),
            "pixels": int(x.size),
            "mean": float(x.mean()),
            "std": float(x.std()),
            "p1": float(p1),
            "median": float(p50),
            "p99": float(p99),
            "below": int((x < edges[0]).sum()),
            "above": int((x > edges[-1]).sum()),
            "counts": counts.tolist(),
        }
    return {"unit": unit, "edges": np.asarray(edges).tolist(), "groups": groups}

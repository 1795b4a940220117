"""Dataset explorer: what a data source holds, summarised before anyone trains on it.

``explore_source`` reads a MedMNIST ``.npz``, a labelled folder, a DICOM metadata table
(written by ``dxkit prepare dicom``), an MRNet root or a SIIM folder (DICOMs + RLE CSV,
``explore_siim``) into one ``Catalog`` (split, labels and
patient id per scan, plus a reader) and summarises it: counts per split and label, label
co-occurrence, patients per split and any overlap between splits, identical images in
several splits, slices per series, intensity histograms (HU for CT), metadata
distributions and example tiles per label. Patient identity never leaves this module: ids
are only counted, or shown hashed unless asked; identity columns are refused; file names
are never shown.

The parts live beside this module: ``explore_catalog`` (Catalog, Scan, scan readers),
``explore_sources`` (one catalog per source kind), ``explore_privacy`` (identity and id
columns), ``explore_summary`` and ``explore_metadata`` (the numbers). Their public names are
re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import dxkit
from dxkit.errors import ConfigError, DxkitError, MissingFileError
from dxkit.evaluate.explore_catalog import (
    UNIT_8BIT,
    UNIT_HU,
    UNIT_RAW,
    VIEW_SIDE,
    Catalog,
    Scan,
    read_dicom_scan,
    read_file_scan,
    view_tile,
)
from dxkit.evaluate.explore_metadata import metadata_columns, metadata_summary
from dxkit.evaluate.explore_privacy import hash_id, is_identifier_column, phi_columns
from dxkit.evaluate.explore_sources import (
    FILE_HASH_LIMIT,
    KINDS,
    detect_kind,
    dicom_table_catalog,
    folder_catalog,
    medmnist_catalog,
    mrnet_catalog,
)
from dxkit.evaluate.explore_summary import (
    HU_EDGES,
    SPLIT_ORDER,
    UINT8_EDGES,
    cooccurrence,
    count_summary,
    duplicate_summary,
    intensity_summary,
    label_groups,
    ordered_splits,
    patient_summary,
    slice_summary,
)
from dxkit.evaluate.json_payload import json_safe

__all__ = [
    "FILE_HASH_LIMIT",
    "HU_EDGES",
    "KINDS",
    "SPLIT_ORDER",
    "UINT8_EDGES",
    "UNIT_8BIT",
    "UNIT_HU",
    "UNIT_RAW",
    "VIEW_SIDE",
    "Catalog",
    "Exploration",
    "Scan",
    "cooccurrence",
    "count_summary",
    "detect_kind",
    "dicom_table_catalog",
    "duplicate_summary",
    "explore_source",
    "folder_catalog",
    "hash_id",
    "intensity_summary",
    "is_identifier_column",
    "label_groups",
    "medmnist_catalog",
    "metadata_columns",
    "metadata_summary",
    "mrnet_catalog",
    "ordered_splits",
    "patient_summary",
    "phi_columns",
    "read_dicom_scan",
    "read_file_scan",
    "slice_summary",
    "view_tile",
]

log = logging.getLogger(__name__)


@dataclass
class Exploration:
    """Every number of the explorer page (``summary``, JSON-ready) and its example tiles
    (``montage``: label group → list of (uint8 tile, split name))."""

    summary: dict[str, Any]
    montage: dict[str, list[tuple[np.ndarray, str]]]


def _pixels(values: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float32).ravel()
    return flat[rng.integers(0, flat.size, cap)] if flat.size > cap else flat


def _read_samples(
    cat: Catalog,
    groups: dict[str, np.ndarray],
    max_images: int,
    pixel_cap: int,
    rng: np.random.Generator,
) -> tuple[dict[str, list[tuple[int, Scan]]], dict[int, Scan | None]]:
    """At most ``max_images`` scans in all, shared evenly among the groups, read once each;
    intensities are kept as a ``pixel_cap`` sample per scan."""
    per_group = max(1, max_images // max(1, len(groups)))
    cache: dict[int, Scan | None] = {}
    out: dict[str, list[tuple[int, Scan]]] = {}
    for group, idx in groups.items():
        picked = rng.choice(idx, size=min(len(idx), per_group), replace=False) if len(idx) else idx
        scans = []
        for i in map(int, picked):
            if i not in cache:
                try:
                    got = cat.read(i)
                    cache[i] = Scan(
                        _pixels(got.values, pixel_cap, rng), got.unit, got.view, got.meta
                    )
                except DxkitError as err:
                    log.warning("explore: %s", err)
                    cache[i] = None
            if (scan := cache[i]) is not None:
                scans.append((i, scan))
        out[group] = scans
    return out, cache


def explore_source(
    source: Path | str,
    kind: str | None = None,
    *,
    csv: Path | None = None,
    root: Path | None = None,
    max_images: int = 200,
    per_label: int = 6,
    pixels_per_image: int = 65_536,
    show_ids: bool = False,
    salt: str | None = None,
    seed: int = 0,
) -> Exploration:
    """Summarise a data source for the explorer page (see the module docstring).

    ``kind`` is detected from the path when None; ``csv`` names a labelled folder's CSV,
    ``root`` the folder a DICOM table's ``file`` paths are relative to. At most
    ``max_images`` scans are read (``pixels_per_image`` intensities kept from each) and
    ``per_label`` of them per label group are shown. Patient ids are hashed with ``salt``
    (a random one per run when None) unless ``show_ids``.
    """
    source = Path(source)
    kind = kind or detect_kind(source, None if csv is None else Path(csv))
    if kind not in KINDS:
        raise ConfigError(f"unknown source kind {kind!r}; use one of {', '.join(KINDS)}")
    for name, value in (
        ("max_images", max_images),
        ("per_label", per_label),
        ("pixels_per_image", pixels_per_image),
    ):
        if value < 1:
            raise ConfigError(f"{name} = {value}; it must be at least 1")
    if not source.exists():
        raise MissingFileError(f"{source}: no such file or folder; check the path")
    if kind == "medmnist":
        cat = medmnist_catalog(source)
    elif kind == "folder":
        cat = folder_catalog(source, None if csv is None else Path(csv))
    elif kind == "dicom-table":
        cat = dicom_table_catalog(source, root)
    elif kind == "siim":
        from dxkit.evaluate.explore_siim import siim_catalog

        cat = siim_catalog(source, None if csv is None else Path(csv))
    else:
        cat = mrnet_catalog(source)
    rng = np.random.default_rng(seed)
    groups = cat.display if cat.display is not None else label_groups(cat)
    samples, cache = _read_samples(cat, groups, max_images, pixels_per_image, rng)
    notes = list(cat.notes)
    failed = sum(s is None for s in cache.values())
    if failed:
        notes.append(f"{failed} of {len(cache)} sampled {cat.item}s could not be read (see log)")
    metadata = None
    if cat.table is not None:
        metadata = {
            "from": f"all {len(cat.table)} rows of the table",
            **metadata_summary(cat.table),
        }
    elif metas := [s.meta for s in cache.values() if s is not None and s.meta]:
        metadata = {"from": f"{len(metas)} sampled files", **metadata_summary(pd.DataFrame(metas))}
    montage = {
        g: [(s.view, str(cat.splits[i])) for i, s in scans[:per_label]]
        for g, scans in samples.items()
        if scans
    }
    summary = {
        "title": f"Dataset explorer: {cat.name}",
        "source": {
            "kind": cat.kind,
            "name": cat.name,
            "path": str(source),
            "item": cat.item,
            "task": cat.task,
            "label_names": cat.label_names,
            "class_names": cat.class_names,
            "splits": ordered_splits(cat.splits),
        },
        "counts": count_summary(cat),
        "patients": patient_summary(cat, show_ids, salt or secrets.token_hex(16)),
        "duplicates": duplicate_summary(cat),
        "cooccurrence": cooccurrence(cat),
        "slices_per_series": slice_summary(cat),
        "intensity": intensity_summary(samples),
        "metadata": metadata,
        "examples": {g: {"shown": len(t), "splits": [s for _, s in t]} for g, t in montage.items()},
        "sampling": {
            "max_images": max_images,
            "read": len(cache),
            "unreadable": failed,
            "pixels_per_image": pixels_per_image,
            "seed": seed,
        },
        "privacy": {
            "refused_columns": cat.refused,
            "ids": "shown (--show-ids)"
            if show_ids
            else ("hashed with the given salt" if salt else "hashed, random salt not stored"),
        },
        "notes": notes,
        "dxkit_version": dxkit.__version__,
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return Exploration(json_safe(summary), montage)

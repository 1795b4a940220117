"""Metadata columns a source may show (no identity, no ids) and their distributions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dxkit.evaluate.explore_catalog import first_value
from dxkit.evaluate.explore_privacy import is_identifier_column, phi_columns


def _plane_name(value: Any) -> str | None:
    """The plane a slice normal points along, for counting orientations in a table.

    Not ``dxkit.data.exam.plane_from_orientation`` (the validating version) because that
    module imports torch: seconds and hundreds of MB for a table summary.
    """
    try:
        iop = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if iop.shape != (6,) or not np.isfinite(iop).all():
        return None
    normal = np.abs(np.cross(iop[:3], iop[3:]))
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))] if normal.max() > 0 else None


def _category(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def metadata_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The showable columns: no identity, no ids/UIDs/paths; orientation as a plane, spacing
    as text, multi-valued tags by their first value, rows × columns as one matrix size."""
    out = {}
    for column in table.columns:
        if is_identifier_column(str(column)) or phi_columns([str(column)]):
            continue
        col = table[column]
        listy = col.map(lambda v: isinstance(v, list | tuple | np.ndarray))
        if column == "ImageOrientationPatient":
            out["plane"] = col.map(_plane_name)
        elif column == "PixelSpacing":
            out[column] = col.map(
                lambda v: None if v is None else " × ".join(f"{float(x):g}" for x in v)
            )
        elif listy.any():
            out[column] = col.map(first_value)
        else:
            out[column] = col
    frame = pd.DataFrame(out, index=table.index)
    if {"Rows", "Columns"} <= set(frame.columns):
        rows, cols = frame.pop("Rows"), frame.pop("Columns")
        frame["matrix"] = [
            None if pd.isna(r) else f"{int(r)}×{int(c)}" for r, c in zip(rows, cols, strict=True)
        ]
    return frame


def metadata_summary(table: pd.DataFrame, top: int = 12) -> dict[str, Any]:
    """Per column: value counts (categorical) or summary statistics and a histogram
    (numeric with many values); free-text columns with mostly unique values are skipped."""
    columns, skipped = {}, []
    for column, col in metadata_columns(table).items():
        values = col.dropna()
        values = values[values.astype(str) != ""]
        missing = len(col) - len(values)
        if values.empty:
            continue
        numeric = pd.to_numeric(values, errors="coerce") if values.dtype != bool else None
        unique = values.astype(str).nunique()
        if numeric is not None and numeric.notna().all() and unique > top:
            x = numeric.to_numpy(dtype=np.float64)
            counts, edges = np.histogram(x, bins=20)
            columns[column] = {
                "kind": "numeric",
                "n": len(x),
                "missing": missing,
                "min": float(x.min()),
                "median": float(np.median(x)),
                "mean": float(x.mean()),
                "max": float(x.max()),
                "edges": edges.tolist(),
                "counts": counts.tolist(),
            }
            continue
        if unique > 20 and unique > 0.5 * len(values):
            skipped.append(str(column))
            continue
        freq = values.map(_category).value_counts()
        shown = {str(k): int(v) for k, v in freq.head(top).items()}
        if len(freq) > top:
            shown[f"other ({len(freq) - top} values)"] = int(freq.iloc[top:].sum())
        if missing:
            shown["missing"] = missing
        columns[column] = {"kind": "categorical", "n": len(col), "counts": shown}
    return {"columns": columns, "skipped_free_text": skipped}

"""Which series of a study a model can read, by rules the model carries.

A checkpoint may carry ``series_rules`` in its ``dxkit`` metadata (written with
``attach_series_rules``); otherwise the rules follow from the model's kind and input
recipe: a CT-window classifier reads CT, a segmenter reads radiographs (CR/DX), an exam
bundle reads the three MR planes. A study with no matching series is reported with the
reason for each series, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydicom.dataset import Dataset

from dxkit.data.exam import plane_from_orientation
from dxkit.pacs.errors import NoSuitableSeriesError


class SeriesRules(BaseModel):
    """What a readable series looks like; empty lists accept anything."""

    model_config = ConfigDict(extra="forbid")

    modalities: list[str]
    body_parts: list[str] = []
    planes: list[str] = []  # one series per plane (exam models); empty: one series
    min_slices: int = 1
    max_slices: int | None = None
    pixel_spacing_mm: tuple[float, float] | None = None  # allowed range of row spacing

    def problems(self, headers: Sequence[Dataset]) -> list[str]:
        """Why this series does not fit (empty when it does)."""
        first = headers[0]
        out = []
        modality = str(first.get("Modality", "") or "")
        if self.modalities and modality not in self.modalities:
            out.append(f"modality {modality or 'missing'} (reads {'/'.join(self.modalities)})")
        part = str(first.get("BodyPartExamined", "") or "").upper()
        if self.body_parts and part not in [b.upper() for b in self.body_parts]:
            out.append(f"body part {part or 'missing'} (reads {'/'.join(self.body_parts)})")
        n = len(headers)
        if n < self.min_slices or (self.max_slices is not None and n > self.max_slices):
            out.append(f"{n} slices (reads {self.min_slices}–{self.max_slices or 'any'})")
        spacing = first.get("PixelSpacing")
        if self.pixel_spacing_mm is not None:
            lo, hi = self.pixel_spacing_mm
            if not spacing or not lo <= float(spacing[0]) <= hi:
                out.append(f"pixel spacing {spacing[0] if spacing else 'missing'} mm "
                           f"(reads {lo}–{hi} mm)")  # fmt: skip
        if self.planes and plane_of(first) not in self.planes:
            out.append(f"plane {plane_of(first) or 'unknown'} (reads {'/'.join(self.planes)})")
        return out


def plane_of(ds: Dataset) -> str | None:
    iop = ds.get("ImageOrientationPatient")
    return plane_from_orientation([float(v) for v in iop]) if iop and len(iop) == 6 else None


def default_rules(kind: str, meta: Mapping[str, Any]) -> SeriesRules:
    """Rules that follow from a model's kind and input recipe."""
    if kind == "exam":
        return SeriesRules(modalities=["MR"], planes=["axial", "coronal", "sagittal"],
                           min_slices=2)  # fmt: skip
    if kind == "segment":
        return SeriesRules(modalities=["CR", "DX"])
    pre = meta.get("preprocessing") or {}
    if pre.get("windows") or pre.get("ct"):
        return SeriesRules(modalities=["CT"])
    return SeriesRules(modalities=["CR", "DX", "MR", "CT", "OT"])


def rules_for(kind: str, meta: Mapping[str, Any]) -> SeriesRules:
    carried = meta.get("series_rules")
    return SeriesRules.model_validate(carried) if carried else default_rules(kind, meta)


def attach_series_rules(checkpoint: Path, rules: SeriesRules) -> None:
    """Write ``rules`` into a classifier/segmenter checkpoint's metadata (atomically)."""
    from dxkit.infer.checkpoint import update_metadata

    update_metadata(checkpoint, series_rules=rules.model_dump(mode="json"))


def pick_series(rules: SeriesRules, series: Mapping[str, Sequence[Dataset]]) -> dict[str, str]:
    """``{slot: series UID}``: ``"scan"`` for a one-series model, each plane for an exam.
    Among several fitting series the one with most instances wins (then the UID, so the
    choice is stable)."""
    reasons = {uid: rules.problems(h) for uid, h in series.items() if h}
    fits = sorted((uid for uid, r in reasons.items() if not r),
                  key=lambda uid: (-len(series[uid]), uid))  # fmt: skip
    if rules.planes:
        chosen: dict[str, str] = {}
        for uid in fits:
            plane = plane_of(series[uid][0])
            if plane in rules.planes and plane not in chosen:
                chosen[plane] = uid
        missing = [p for p in rules.planes if p not in chosen]
        if not missing:
            return chosen
        detail = f"no {', '.join(missing)} series"
    elif fits:
        return {"scan": fits[0]}
    else:
        detail = "no series fits"
    why = "; ".join(f"series {i + 1}: {', '.join(r)}" for i, r in enumerate(reasons.values()) if r)
    raise NoSuitableSeriesError(f"{detail} ({why or 'the study is empty'})")

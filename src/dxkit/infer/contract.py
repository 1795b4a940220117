"""The checkpoint contract: one pydantic model for the ``"dxkit"`` metadata of each kind.

A checkpoint is ``{"dxkit": metadata, <weights>}`` read with ``torch.load(weights_only=True)``,
so the metadata holds only plain values (and, in exam bundles, tensors). ``format`` names
the kind and its version; a reader accepts the versions listed in ``READABLE`` and refuses
anything else with a ``CheckpointError`` that names the file, what it found, the dxkit
version that wrote it and what to do. Training builds the metadata through these models
(``ClassifierMetadata(...).dump()``), so writer and readers share one definition.

Version history: ``dxkit-checkpoint/1``, ``dxkit-segment/1``, ``dxkit-exam-bundle/1`` — the
layouts written since dxkit 0.1 (unchanged by this contract: old files validate as they are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dxkit import __version__
from dxkit.data.source import Task
from dxkit.errors import CheckpointError
from dxkit.preprocess.spec import Preprocessing

Kind = Literal["classify", "segment", "exam", "exam-network"]
CLASSIFY_FORMAT = "dxkit-checkpoint/1"
SEGMENT_FORMAT = "dxkit-segment/1"
EXAM_FORMAT = "dxkit-exam-bundle/1"
CURRENT: dict[str, str] = {"classify": CLASSIFY_FORMAT, "segment": SEGMENT_FORMAT,
                           "exam": EXAM_FORMAT}  # fmt: skip
EXAM_NETWORK_FORMAT = "dxkit-exam-network/1"
# Every format this dxkit reads, per kind (a new version adds itself here with a migration).
# An exam run's per-network training checkpoints (kind "exam-network", never served; the
# first ones carried no format) hold only weights for the bundle.
READABLE: dict[str, tuple[str | None, ...]] = {k: (v,) for k, v in CURRENT.items()} | {
    "exam-network": (None, EXAM_NETWORK_FORMAT)
}


class InferenceRecipe(BaseModel):
    """How the served probabilities are computed: recorded with the thresholds fitted on them."""

    model_config = ConfigDict(extra="forbid")
    tta: bool = False


class Metadata(BaseModel):
    # Later additions by newer dxkit versions of the same format stay readable.
    model_config = ConfigDict(extra="allow")

    format: str
    kind: Kind
    dxkit_version: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    dataset: str | None = None
    inference: InferenceRecipe | None = None
    # The input guard: ``preprocess.input_profile.profile_inputs`` of the training scans as
    # read; exam bundles keep one per plane, ``{plane: profile}`` (absent in files written
    # before it: nothing is then checked).
    input_profile: dict[str, Any] | None = None

    def dump(self) -> dict[str, Any]:
        """The plain dict stored under ``"dxkit"`` (no pydantic objects: weights_only-safe;
        unset optional entries are left out, as the readers default them)."""
        return self.model_dump(mode="python", exclude_none=True)


class ClassifierRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    in_chans: int
    num_classes: int
    spatial_dims: Literal[2, 3]
    options: dict[str, Any] = Field(default_factory=dict)


class ClassifierMetadata(Metadata):
    """``kind: classify`` — 2-D, slice-stack and 3-D classifiers (``dxkit.train.fit``)."""

    format: Literal["dxkit-checkpoint/1"] = "dxkit-checkpoint/1"
    kind: Literal["classify"] = "classify"
    preprocessing: Preprocessing
    label_names: list[str]
    task: Task
    model: ClassifierRecipe
    thresholds: list[float] | None = None
    threshold_method: str | None = None
    calibration: dict[str, Any] | None = None

    def dump(self) -> dict[str, Any]:
        out = super().dump()
        out["preprocessing"] = self.preprocessing.model_dump(mode="json")
        return out


class SegmenterRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    architecture: str
    encoder: str
    in_chans: int = 1
    classes: int = 1
    classifier: bool = False


class SegmentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int
    scaling: str = "bits"
    in_chans: int = 1


class SegmenterMetadata(Metadata):
    """``kind: segment`` — SIIM segmenters (``dxkit.train.segment_fit``)."""

    format: Literal["dxkit-segment/1"] = "dxkit-segment/1"
    kind: Literal["segment"] = "segment"
    task: Literal["segment"] = "segment"
    label_names: list[str]
    preprocessing: SegmentInput
    model: SegmenterRecipe
    decision: Literal["segmenter", "classifier", "both"] = "segmenter"
    splits: dict[str, list[str]] = Field(default_factory=dict)
    # threshold, min_area, classifier, preferred, validation... (None until training ends)
    thresholds: dict[str, Any] | None = None


class ExamRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backbone: str
    in_chans: int = 1
    pooling: str
    variant: str
    planes: list[str]
    findings: list[str]
    options: dict[str, Any] = Field(default_factory=dict)


class ExamMetadata(Metadata):
    """``kind: exam`` — MRNet-style exam bundles (``dxkit.train.exam_fit``)."""

    format: Literal["dxkit-exam-bundle/1"] = "dxkit-exam-bundle/1"
    kind: Literal["exam"] = "exam"
    findings: list[str]
    planes: list[str]
    model: ExamRecipe
    networks: dict[str, Any] = Field(default_factory=dict)
    normalization: dict[str, Any]
    size: int | None = None
    thresholds: list[float]
    threshold_method: str | None = None
    thresholds_from: str | None = None
    tuning: dict[str, Any] = Field(default_factory=dict)
    fusion: dict[str, Any]


class ExamNetworkMetadata(Metadata):
    """``kind: exam-network`` — one network's Lightning checkpoint inside an exam run."""

    format: str | None = None  # type: ignore[assignment]
    kind: Literal["exam-network"] = "exam-network"


MODELS: dict[str, type[Metadata]] = {
    "exam-network": ExamNetworkMetadata,
    "classify": ClassifierMetadata,
    "segment": SegmenterMetadata,
    "exam": ExamMetadata,
}


def _written_by(meta: dict[str, Any]) -> str:
    version = meta.get("dxkit_version")
    return f"dxkit {version}" if version else "an unknown dxkit version"


def parse_metadata(meta: Any, path: str | Path) -> Metadata:
    """Check a checkpoint's ``"dxkit"`` entry against the contract of its kind."""
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path}: 'dxkit' metadata is a {type(meta).__name__}, not a mapping; "
            "use a checkpoint written by dxkit train"
        )
    kind = meta.get("kind", "classify")  # the first classifier checkpoints had no kind
    if kind not in MODELS:
        raise CheckpointError(
            f"{path}: checkpoint kind {kind!r} (written by {_written_by(meta)}) is not one this "
            f"dxkit {__version__} knows ({', '.join(MODELS)}); load it with the dxkit version "
            "that wrote it, or retrain"
        )
    found = meta.get("format")
    if found not in READABLE[kind]:
        raise CheckpointError(
            f"{path}: {kind} checkpoint format {found!r} (written by {_written_by(meta)}); "
            f"dxkit {__version__} reads {', '.join(map(str, READABLE[kind]))}; load it with the "
            "dxkit version that wrote it, or retrain with this one"
        )
    try:
        return MODELS[kind].model_validate({**meta, "kind": kind})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CheckpointError(
            f"{path}: {found} metadata does not fit the contract at {where!r} "
            f"({first['msg']}; written by {_written_by(meta)}); retrain, or load it with the "
            "dxkit version that wrote it"
        ) from None

"""The ``exam:`` section of a run config (multi-plane exams, e.g. MRNet knee MRI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ExamConfig(BaseModel):
    """Slice-stack networks per plane (and finding) plus the plane-fusion regression.

    The backbone is ``model.name`` (``model.options`` go to the slice-stack network and its
    backbone), the slice size ``preprocess.size`` (None keeps MRNet's native 256 px) and the
    optimiser, epochs and class weighting come from ``train``. ``train.max_minutes`` limits
    each network's training, not the whole run.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    planes: list[Literal["axial", "coronal", "sagittal"]] = ["axial", "coronal", "sagittal"]
    findings: list[str] = ["abnormal", "acl", "meniscus"]
    variant: Literal["per_finding", "multitask"] = Field(
        default="multitask",
        description="one network per (finding, plane) as the paper, or per plane",
    )
    pooling: Literal["max", "mean", "attention"] = "max"
    fusion_folds: int = Field(default=5, ge=2, description="k-fold for out-of-fold fusion inputs")
    fusion_inputs: Literal["standardized_logit", "probability"] = Field(
        default="standardized_logit",
        description="what the fusion regression sees: each network's log-odds standardised on "
        "exams it never trained on (robust to per-network offsets), or the raw plane "
        "probabilities as in the paper",
    )
    fusion_c: float = Field(
        default=1.0, gt=0, description="inverse L2 strength of the fusion regression"
    )
    holdout_fraction: float = Field(
        default=0.15,
        gt=0,
        lt=0.5,
        description="share of the training exams held out (stratified) as the tuning set: "
        "best epoch of every network and the operating thresholds are chosen on it",
    )
    augment: bool = Field(default=True, description="series-wide rotation/shift/flip (Bien et al.)")
    max_rotation: float = Field(default=25.0, ge=0, le=180, description="degrees")
    max_shift: float = Field(default=25.0, ge=0, description="pixels at the model's slice size")
    flip_p: float = Field(default=0.5, ge=0, le=1)
    strict: bool | None = Field(
        default=None,
        description="true: fail on the first bad exam; false: skip bad exams (one summary "
        "line); unset: skip only label rows without volumes, fail on the rest",
    )

    @model_validator(mode="after")
    def _unique(self) -> ExamConfig:
        if len(set(self.planes)) != len(self.planes) or not self.planes:
            raise ValueError(f"exam.planes {self.planes} must be non-empty and unique")
        if len(set(self.findings)) != len(self.findings) or not self.findings:
            raise ValueError(f"exam.findings {self.findings} must be non-empty and unique")
        return self

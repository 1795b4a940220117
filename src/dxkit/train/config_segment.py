"""The ``segment:`` section of a run config (pixel segmentation, e.g. SIIM pneumothorax)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SegmentConfig(BaseModel):
    """U-Net and loss settings; the image size is ``preprocess.size`` (a multiple of 32)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    architecture: Literal["unet"] = "unet"
    encoder: str = "resnet18"
    bce_weight: float = Field(default=1.0, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    focal_weight: float = Field(default=0.0, ge=0)
    decision: Literal["segmenter", "classifier", "both"] = Field(
        default="segmenter",
        description="image-level pneumothorax decision: from the mask (probability threshold"
        " + minimum area chosen on validation), a separate classifier, or both (report which wins)",
    )
    classifier_weight: float = Field(
        default=1.0,
        ge=0,
        description="weight of the classification head's BCE in the training loss",
    )
    strict: bool = Field(
        default=False, description="fail on any unusable CSV row / image instead of listing a skip"
    )
    scaling: Literal["bits", "voi"] = Field(
        default="bits", description="radiograph pixel scaling (see dxkit.io.radiograph)"
    )
    foreground_prior: float | None = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="start the output bias at this pixel foreground rate (None: smp's p = 0.5)",
    )
    augment: bool = Field(
        default=True, description="joint flip/rotation/shift/scale of image and mask"
    )
    cache: bool = Field(
        default=True,
        description="keep resized training pairs in memory (one copy per training size)",
    )

"""Run configuration: pydantic models loaded from YAML, validated, overridable with --set.

Unknown keys are errors (``extra="forbid"``), so a typo never silently falls back to a
default. String values may use ``${VAR:-default}`` to read environment variables, which is
how recipes find the data folder on different machines.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dxkit.errors import ConfigError, MissingFileError
from dxkit.train.config_exam import ExamConfig
from dxkit.train.config_segment import SegmentConfig

WindowSpec = str | tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the scans and labels come from and how they are batched."""

    source: Literal["medmnist", "folder", "rsna", "siim", "mrnet"] = "medmnist"
    name: str | None = Field(default=None, description="MedMNIST set name, e.g. breastmnist")
    path: Path | None = Field(default=None, description="an .npz file, or the root folder of scans")
    csv: Path | None = Field(default=None, description="label CSV for a folder source")
    layout: Literal["auto", "csv", "class_folders"] = Field(
        default="auto",
        description="folder source: a label CSV, or root/[split/]class/... folders (auto: "
        "class folders when the folder has no CSV)",
    )
    id_column: str | None = Field(
        default=None, description="folder source: CSV column naming each scan instead of 'path'"
    )
    path_pattern: str | None = Field(
        default=None, description="folder source: id → file, e.g. '{id}.png', 'img/{id:03d}.png'"
    )
    size: int = Field(
        default=28, description="MedMNIST image size of the file to use (28, 64, ...)"
    )
    download: bool = False
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    test_fraction: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="held-out test share (folder, rsna, siim; by patient) that no choice sees; "
        "0 = none, then evaluate scores the selection split and says so",
    )
    batch_size: int = Field(default=64, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    num_workers: int = Field(default=0, ge=0)
    cache: bool = Field(
        default=True,
        description="keep each prepared scan in memory (per loader worker); false streams "
        "from disk every epoch: memory flat in dataset size",
    )


class PreprocessConfig(_Strict):
    """How a read scan becomes a model input; saved into every checkpoint."""

    size: int | None = Field(
        default=None, ge=8, description="resize to size×size(×size); None = native"
    )
    windows: list[WindowSpec] | None = Field(
        default=None, description="CT windows stacked as channels: preset names or [center, width]"
    )
    normalize: Literal["dataset", "none"] = "dataset"


class ModelConfig(_Strict):
    name: str = "resnet18"
    pretrained: bool | str = False
    options: dict[str, Any] = Field(default_factory=dict, description="extra model kwargs")
    ensemble: int = Field(
        default=1,
        ge=1,
        le=16,
        description="train N independently initialised copies, average logits",
    )

    @property
    def label(self) -> str:
        """How reports name the model: ``smallresnet`` or ``smallresnet (ensemble of 4)``."""
        return self.name + (f" (ensemble of {self.ensemble})" if self.ensemble > 1 else "")


class AugmentConfig(_Strict):
    strength: Literal["none", "light", "medium"] = "light"
    flip: bool = True


class TrainConfig(_Strict):
    """Optimisation and the Lightning trainer settings."""

    epochs: int = Field(default=10, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = Field(default=0.25, gt=0, lt=1)
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    grad_clip: float | None = Field(default=1.0, gt=0)
    class_weights: Literal["none", "balanced"] = "none"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    progressive_resize: list[tuple[int, int]] | None = Field(
        default=None, description="[[epoch, size], ...]: train at `size` from `epoch` on"
    )
    freeze_epochs: int = Field(
        default=0, ge=0, description="epochs with the pretrained body frozen"
    )
    body_lr_factor: float = Field(default=1.0, gt=0, le=1, description="body lr = lr × this")
    early_stopping_patience: int | None = Field(default=None, ge=1)
    ema_decay: float | None = Field(
        default=None, gt=0, lt=1, description="validate and save an EMA of the weights (per step)"
    )
    calibrate: Literal["none", "platt"] = Field(
        default="none", description="after training, fit Platt scaling on val into best.ckpt's head"
    )
    mixup: float = Field(
        default=0.0, ge=0, description="mixup Beta(α, α) for classifier batches (0 = off; ~0.2–0.4)"
    )
    monitor: Literal["val_auc", "val_loss", "val_dice"] = "val_auc"
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = Field(default=1, ge=1)
    sync_batchnorm: bool = Field(
        default=False,
        description="DDP: batch-norm statistics over the global batch, not each process's share",
    )
    max_minutes: float | None = Field(default=None, gt=0, description="stop training after this")
    limit_train_batches: int | float | None = None

    @field_validator("progressive_resize")
    @classmethod
    def _sorted_schedule(cls, v: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        if v is not None:
            epochs = [e for e, _ in v]
            if epochs != sorted(epochs) or any(s < 8 for _, s in v):
                raise ValueError("progressive_resize must be [[epoch, size], ...] sorted by epoch")
        return v


class EvaluateConfig(_Strict):
    tta: bool = False
    threshold: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = Field(default=0.9, gt=0, lt=1)
    bootstrap: int = Field(default=1000, ge=0)


class RunConfig(_Strict):
    """A whole recipe: data, preprocessing, model, training and evaluation."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    task: Literal["classify", "segment", "exam"] = Field(
        default="classify",
        description="what is trained: a classifier, a segmenter or an exam model",
    )
    seed: int = 0
    output_dir: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    exam: ExamConfig = Field(default_factory=ExamConfig)

    @model_validator(mode="after")
    def _classifier_only_options(self) -> RunConfig:
        if self.task != "classify":
            if self.train.mixup:
                raise ValueError(f"train.mixup applies to classifiers, not task {self.task!r}")
            if self.model.ensemble > 1:
                raise ValueError(f"model.ensemble applies to classifiers, not task {self.task!r}")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; write e.g. train.epochs=5")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = yaml.safe_load(text)
    return raw


def _format_errors(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}")
        else:
            parts.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    return f"{source}: " + "; ".join(parts) + " — fix the config or the --set override"


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(_expand_env(raw))
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe, apply ``--set`` overrides and validate the result."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file {path} does not exist; pass a YAML recipe path")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    return with_absolute_data_paths(config_from_dict(raw, source=str(path)))


def with_absolute_data_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``data.path`` and ``data.csv`` made absolute (against the current folder).

    Recipes name data relative to where ``dxkit train`` runs; the run's saved config must
    still find it when ``dxkit evaluate`` or ``predict`` runs from another folder later.
    """
    data = cfg.data
    update = {
        key: value.expanduser().resolve()
        for key in ("path", "csv")
        if (value := getattr(data, key)) is not None
    }
    return cfg.model_copy(update={"data": data.model_copy(update=update)})

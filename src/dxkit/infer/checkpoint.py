"""Checkpoints that carry their preprocessing: save the dxkit metadata, load safely.

A checkpoint is Lightning's file plus a ``"dxkit"`` entry: the resolved config, the
preprocessing, label names, task, model name and arguments, thresholds chosen on
validation, and the dxkit version. Loading always uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dxkit.data.source import Task
from dxkit.errors import CheckpointError, MissingFileError
from dxkit.infer.contract import ClassifierMetadata, Metadata, parse_metadata
from dxkit.models.registry import create_model
from dxkit.preprocess.spec import Preprocessing


@dataclass
class LoadedModel:
    """A model in eval mode with everything needed to feed it and read its output."""

    model: nn.Module
    preprocessing: Preprocessing
    label_names: list[str]
    task: Task
    thresholds: list[float]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def tta(self) -> bool:
        """Whether this model's probabilities are averaged over test-time flips.

        ``dxkit evaluate`` records the choice (``inference.tta``) with the thresholds it fits,
        so every consumer serves the probabilities the thresholds were chosen on; before a
        checkpoint is evaluated, its config's ``evaluate.tta`` is the recipe.
        """
        return recorded_tta(self.meta)


def recorded_tta(meta: dict[str, Any]) -> bool:
    """A checkpoint's TTA recipe: ``inference.tta`` when recorded (with the thresholds fitted
    on those probabilities), else its config's ``evaluate.tta``."""
    recorded = (meta.get("inference") or {}).get("tta")
    if recorded is not None:
        return bool(recorded)
    return bool(((meta.get("config") or {}).get("evaluate") or {}).get("tta", False))


def read_checkpoint(path: str | Path, check: bool = True) -> dict[str, Any]:
    """Load a checkpoint file without executing any pickled code; with ``check`` its
    metadata must fit the contract of its kind (``dxkit.infer.contract``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist; pass a .ckpt from a run folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt/untrusted files
        raise CheckpointError(_unsafe_message(path, err)) from None
    if not isinstance(ckpt, dict) or "dxkit" not in ckpt:
        raise CheckpointError(
            f"{path}: not a dxkit checkpoint (no 'dxkit' metadata); pass a .ckpt written by "
            "dxkit train"
        )
    if check:
        parse_metadata(ckpt["dxkit"], path)
    return ckpt


def _unsafe_message(path: Path, err: Exception) -> str:
    """Why a weights-only load refused ``path``, in whole sentences (torch's own text is long
    and suggests the unsafe load; it is not passed on)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    if found:
        why = (
            f"it refers to Python code ({found.group(1)}) that a weights-only load refuses to "
            "run, so it was not loaded"
        )
    else:
        why = f"it is damaged or not a PyTorch checkpoint ({type(err).__name__})"
    return f"{path}: cannot be loaded safely: {why}; use a checkpoint written by dxkit."


def checkpoint_metadata(path: str | Path) -> Metadata:
    """The checkpoint's metadata as its kind's contract model."""
    return parse_metadata(read_checkpoint(path, check=False)["dxkit"], path)


def resolve_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """A run folder → its best checkpoint; a file → itself."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        for name in ("bundle.ckpt", "best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise MissingFileError(
            f"{path}: no checkpoints/bundle.ckpt, best.ckpt or last.ckpt in this run folder"
        )
    if not path.exists():
        raise MissingFileError(f"{path} does not exist; pass a run folder or a .ckpt file")
    return path


def checkpoint_kind(path: str | Path) -> str:
    """``classify``, ``segment`` or ``exam``: which workflow wrote the checkpoint."""
    return checkpoint_metadata(path).kind


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Rebuild the model and its preprocessing from a checkpoint file."""
    ckpt = read_checkpoint(path, check=False)
    meta = ckpt["dxkit"]
    info = parse_metadata(meta, path)
    if not isinstance(info, ClassifierMetadata):
        raise CheckpointError(
            f"{path}: a {info.kind} checkpoint, not a classifier; dxkit predict/evaluate pick "
            "the right loader by kind"
        )
    m = meta["model"]
    model = create_model(
        m["name"], m["in_chans"], m["num_classes"], m["spatial_dims"], **m.get("options", {})
    )
    state = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model {m['name']}: {err}") from None
    model.eval()
    labels = list(meta["label_names"])
    return LoadedModel(
        model=model,
        preprocessing=Preprocessing.model_validate(meta["preprocessing"]),
        label_names=labels,
        task=meta["task"],
        thresholds=list(meta.get("thresholds") or [0.5] * len(labels)),
        meta=meta,
        path=Path(path),
    )


def update_metadata(path: str | Path, **updates: Any) -> None:
    """Write new values (e.g. validation thresholds) into a checkpoint's dxkit metadata,
    atomically: the old file stays intact until the new one is complete."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    ckpt["dxkit"].update(updates)
    parse_metadata(ckpt["dxkit"], path)  # never write a file the readers would refuse
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)

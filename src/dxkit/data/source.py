"""What every data source hands to the training engine: labelled splits plus their meaning.

A source (MedMNIST file, labelled folder, RSNA cache, SIIM sample...) resolves to a
``SourceData``. The engine never needs to know where the scans came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Task = Literal["binary", "multiclass", "multilabel"]
InputKind = Literal["uint8", "hounsfield", "float"]


@dataclass
class LabelledSet:
    """One split: scans (in-memory arrays or file paths), labels and optional patient groups.

    ``items[i]`` is either a NumPy array already in the contract's layout without the
    channel axis or with it (``(H, W)``, ``(C, H, W)``, ``(D, H, W)`` or ``(C, D, H, W)``)
    or a ``Path`` read lazily with ``dxkit.io.read_scan``.
    ``labels`` is float32 ``(N, L)``: one column for a binary task, one per finding for
    multilabel, one-hot columns for multiclass. ``groups`` holds patient (or exam) ids when known.
    """

    items: Sequence[np.ndarray | Path] | np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None
    ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class SourceData:
    """All splits of one dataset and what its labels mean."""

    splits: dict[str, LabelledSet]
    label_names: list[str]
    task: Task
    spatial_dims: Literal[2, 3] = 2
    in_chans: int = 1
    native_size: int | None = None
    input_kind: InputKind = "uint8"
    name: str = "dataset"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        """Number of logits the model needs: one per label (a binary task has one label)."""
        return len(self.label_names)

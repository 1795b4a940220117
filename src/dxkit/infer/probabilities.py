"""A classifier's probabilities for prepared batches and for whole splits.

One forward pass per test-time view (``data.augment.tta_views``: the scan and its flip when
the recipe says TTA), probabilities averaged over the views. Training's calibration and
threshold choice, evaluation, the Predictor, the explainer and the ONNX graph all compute
"the model's probability" here, so what is scored is what is served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dxkit.data.augment import tta_views
from dxkit.data.dataset import ScanDataset
from dxkit.data.source import LabelledSet, Task
from dxkit.infer.checkpoint import LoadedModel
from dxkit.infer.device import ProgressCallback, Runtime, runtime_for


def probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Logits ``(..., L)`` → probabilities: softmax for one-of-K, sigmoid per label."""
    return logits.softmax(dim=-1) if task == "multiclass" else logits.sigmoid()


def view_logits(model: nn.Module, x: torch.Tensor, spatial_dims: int, tta: bool) -> torch.Tensor:
    """Logits ``(V, N, L)``: one row per test-time view (V = 1 without TTA), in fp32."""
    views = tta_views(x, spatial_dims) if tta else [x]
    return torch.stack([model(v).float() for v in views])


def predict_probabilities(
    model: nn.Module, x: torch.Tensor, task: Task, spatial_dims: int, tta: bool
) -> torch.Tensor:
    """The model's probabilities for a prepared batch: one forward pass, or with ``tta``
    the mean of the probabilities over ``tta_views`` (the scan and its flip)."""
    return probabilities(view_logits(model, x, spatial_dims, tta), task).mean(0)


def split_batches(
    loaded: LoadedModel, labelled: LabelledSet, batch_size: int = 256
) -> Iterable[torch.Tensor]:
    """Prepared input batches of a split (its scans through the checkpoint's preprocessing)."""
    dataset = ScanDataset(labelled, loaded.preprocessing, cache=False)
    for x, _ in DataLoader(dataset, batch_size=batch_size):
        yield x


@torch.no_grad()
def _split_views(
    loaded: LoadedModel,
    labelled: LabelledSet,
    tta: bool | None,
    batch_size: int,
    runtime: Runtime | None,
    progress: ProgressCallback | None,
) -> Iterator[torch.Tensor]:
    """Per batch of the split, the logits ``(V, N, L)`` of its test-time views."""
    use_tta = loaded.tta if tta is None else tta
    rt = runtime or runtime_for(loaded.meta.get("config"))
    model = loaded.model.to(rt.device).eval()
    dims = loaded.preprocessing.spatial_dims
    done, total = 0, len(labelled)
    for x in split_batches(loaded, labelled, batch_size):
        with rt.amp():
            yield view_logits(model, x.to(rt.device), dims, use_tta).cpu()
        done += len(x)
        if progress is not None:
            progress(done, total)


def predict_set(
    loaded: LoadedModel,
    labelled: LabelledSet,
    tta: bool | None = None,
    batch_size: int = 256,
    runtime: Runtime | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Probabilities ``(N, L)`` of every scan of a split, on the checkpoint's runtime (CUDA
    when present, as in training). ``tta`` defaults to the checkpoint's recipe."""
    out = [
        probabilities(z, loaded.task).mean(0)
        for z in _split_views(loaded, labelled, tta, batch_size, runtime, progress)
    ]
    if not out:
        return np.zeros((0, len(loaded.label_names)), np.float32)
    return torch.cat(out).numpy()


def predict_set_logits(
    loaded: LoadedModel,
    labelled: LabelledSet,
    tta: bool | None = None,
    batch_size: int = 256,
    runtime: Runtime | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """The per-view logits ``(V, N, L)`` behind ``predict_set`` (what calibration fits)."""
    out = list(_split_views(loaded, labelled, tta, batch_size, runtime, progress))
    return torch.cat(out, dim=1).numpy()

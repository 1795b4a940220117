"""Class activation maps for 2-D (and 3-D) classifiers, through pytorch-grad-cam.

Grad-CAM and Grad-CAM++ come straight from pytorch-grad-cam; ScoreCAM (gradient-free) uses
its machinery with our own channel-scoring loop (see ``_ScoreCAM``). Two things the library
does not do and dxkit needs:

- **raw maps**: the library stretches every map to its own 0–1, which hides how strong the
  evidence is and makes maps of different images, slices or planes incomparable. We keep
  the CAM in its own units (``Heatmap.raw``) and give the 0–1 version only for display.
- **the scan's geometry**: maps are returned at the resolution of the scan as read, not of
  the resized model input, so they lie on the scan they explain.

The target layer comes from ``cam_target_layer(model)`` unless the user names one, and the
target is the raw logit of the finding asked for, whatever the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from dxkit.data.source import Task
from dxkit.errors import ConfigError
from dxkit.explain.geometry import (
    describe_expected,
    map_to_scan,
    normalise,
    prepare_scan,
    upsample_maps,
)
from dxkit.explain.occlusion import occlusion_map
from dxkit.explain.targets import (
    default_finding,
    resolve_finding,
    resolve_layer,
    spatial_layer_names,
)
from dxkit.infer.probabilities import predict_probabilities
from dxkit.models.ensemble import DeepEnsemble
from dxkit.preprocess.spec import Preprocessing

__all__ = [
    "METHODS",
    "CamExplainer",
    "Heatmap",
    "compute_maps",
    "default_finding",
    "describe_expected",
    "normalise",
    "resolve_finding",
    "resolve_layer",
    "upsample_maps",
]

log = logging.getLogger(__name__)

SCORECAM_BATCH = 32


class _RawMaps:
    """Mixin for pytorch-grad-cam methods: keep each map in its own units.

    The library's ``compute_cam_per_layer`` min-max scales every map to 0–1 (and its 3-D
    resize uses ``scipy.ndimage.zoom``); this replaces only that step, the weighting of
    activations stays the library's.
    """

    def compute_cam_per_layer(
        self, input_tensor: torch.Tensor, targets: list[nn.Module], eigen_smooth: bool
    ) -> list[np.ndarray]:
        self_: Any = self
        acts = [a.cpu().data.numpy() for a in self_.activations_and_grads.activations]
        grads = [g.cpu().data.numpy() for g in self_.activations_and_grads.gradients]
        size = tuple(input_tensor.shape[2:])
        maps = []
        for i, layer in enumerate(self_.target_layers):
            cam = self_.get_cam_image(
                input_tensor,
                layer,
                targets,
                acts[i] if i < len(acts) else None,
                grads[i] if i < len(grads) else None,
                eigen_smooth,
            )
            maps.append(upsample_maps(np.maximum(cam, 0.0), size))
        return maps

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        return np.mean(np.stack(cam_per_target_layer, axis=1), axis=1)


class _GradCAM(_RawMaps, GradCAM):
    pass


class _GradCAMPlusPlus(_RawMaps, GradCAMPlusPlus):
    pass


class _ScoreCAM(_RawMaps, BaseCAM):
    """Score-CAM (Wang et al. 2020): each channel's upsampled, 0–1 scaled activation masks
    the input; the target score of each masked input, softmaxed over channels, weights it.

    Written here rather than using ``pytorch_grad_cam.ScoreCAM`` because the library's
    version is 2-D only (``UpsamplingBilinear2d``) and draws a progress bar per batch; the
    method is the same.
    """

    def __init__(self, model: nn.Module, target_layers: list[nn.Module]) -> None:
        super().__init__(model, target_layers, uses_gradients=False)

    def get_cam_weights(
        self,
        input_tensor: torch.Tensor,
        target_layer: nn.Module,
        targets: list[Callable[[torch.Tensor], torch.Tensor]],
        activations: np.ndarray,
        grads: np.ndarray | None,
    ) -> np.ndarray:
        with torch.no_grad():
            n, k = activations.shape[:2]
            size = tuple(input_tensor.shape[2:])
            masks = torch.from_numpy(
                upsample_maps(activations.reshape(n * k, *activations.shape[2:]), size)
            )
            masks = masks.reshape(n, k, -1)
            lo, hi = masks.min(dim=2, keepdim=True).values, masks.max(dim=2, keepdim=True).values
            masks = ((masks - lo) / (hi - lo + 1e-8)).reshape(n, k, *size).to(self.device)
            weights = []
            for image, target, image_masks in zip(input_tensor, targets, masks, strict=True):
                scores: list[float] = []
                for start in range(0, k, SCORECAM_BATCH):
                    chunk = image_masks[start : start + SCORECAM_BATCH, None] * image[None]
                    scores.extend(float(target(o)) for o in self.model(chunk))
                weights.append(torch.tensor(scores).softmax(dim=0).numpy())
            return np.stack(weights)


CAM_CLASSES: dict[str, type[BaseCAM]] = {
    "gradcam": _GradCAM,
    "gradcam++": _GradCAMPlusPlus,
    "scorecam": _ScoreCAM,
}
# Gradient-free: scorecam (one forward pass per channel of the layer) and occlusion (a fixed
# grid of forward passes, no layer; see occlusion.py).
METHODS: tuple[str, ...] = (*CAM_CLASSES, "occlusion")
INPUT_LAYER = "input"  # what occlusion reports as its "layer"


def member_layers(model: nn.Module, target_layer: nn.Module) -> list[nn.Module]:
    """The CAM layers to read: for a deep ensemble whose layer is one member's, the same
    layer of every member (the library averages their maps, so an ensemble's heatmap is
    the mean of its members' maps, scaled by 1/members through the averaged logit);
    otherwise the layer itself."""
    if isinstance(model, DeepEnsemble):
        path = next((n for n, m in model.named_modules() if m is target_layer), "")
        if path.startswith("members.0."):
            rest = path.removeprefix("members.0.")
            return [member.get_submodule(rest) for member in model.members]
    return [target_layer]


def compute_maps(
    model: nn.Module,
    target_layer: nn.Module | None,
    method: str,
    x: torch.Tensor,
    index: int,
    layer_name: str = "the target layer",
) -> np.ndarray:
    """Raw maps ``(N, *spatial)`` of output ``index`` at the resolution of the prepared
    batch ``x``; ``target_layer`` is None for occlusion (it perturbs the input)."""
    if method == "occlusion" or target_layer is None:
        return np.stack([occlusion_map(model, image, index) for image in x])
    layer_names = ", ".join(spatial_layer_names(model))
    targets = [ClassifierOutputTarget(index) for _ in range(x.shape[0])]
    cam = CAM_CLASSES[method](model, member_layers(model, target_layer))
    # Not ``with cam:`` — the library's __exit__ prints and swallows IndexErrors.
    try:
        with torch.enable_grad():
            out = cam(input_tensor=x, targets=targets)
    except (ValueError, IndexError) as err:
        # The library raises these when the layer's output is not a feature map (a linear
        # head, a pooled vector) or the layer never runs in the forward pass.
        raise ConfigError(
            f"cannot compute {method} on layer {layer_name!r} ({err}); use a layer that "
            f"outputs a spatial feature map: {layer_names}"
        ) from None
    finally:
        cam.activations_and_grads.release()
    if out.ndim != x.ndim - 1:
        raise ConfigError(
            f"layer {layer_name!r} does not output a spatial feature map; choose one of "
            f"{layer_names}"
        )
    return out.astype(np.float32)


@dataclass
class Heatmap:
    """One finding's map on one scan.

    ``raw`` is at the scan's resolution (``(H, W)`` or ``(D, H, W)``), non-negative, in the
    method's own units: comparable across scans explained by the same model, method and
    finding. ``model_map`` is the same map at the model input's resolution.
    """

    finding: str
    finding_index: int
    method: str
    layer: str
    raw: np.ndarray
    model_map: np.ndarray
    probability: float
    logit: float

    @property
    def normalised(self) -> np.ndarray:
        """``raw`` divided by its maximum (0–1), for display; all zeros when the map is."""
        return normalise(self.raw)

    @property
    def peak(self) -> tuple[int, ...]:
        """Index of the map's hottest point at the scan's resolution."""
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(self.raw)), self.raw.shape))


class CamExplainer:
    """Heatmaps of one classifier with one method and layer; reused across scans."""

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        label_names: list[str],
        task: str,
        method: str = "gradcam",
        layer: str | None = None,
        tta: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ConfigError(
                f"unknown heatmap method {method!r}; choose one of {', '.join(METHODS)}"
            )
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.label_names = list(label_names)
        self.task = task
        self.tta = tta  # the served recipe: reported probabilities average the flipped views
        self.method = method
        self.target_layer: nn.Module | None = None
        if method == "occlusion":
            if layer is not None:
                raise ConfigError(
                    f"--layer {layer!r} does not apply to occlusion (it perturbs the input); "
                    f"drop it or use one of {', '.join(CAM_CLASSES)}"
                )
            self.layer = INPUT_LAYER
        else:
            self.layer, self.target_layer = resolve_layer(model, layer)
        self.device = next(model.parameters()).device

    @classmethod
    def from_predictor(
        cls, predictor: Any, method: str = "gradcam", layer: str | None = None
    ) -> CamExplainer:
        """Share a ``Predictor``'s model and preprocessing (so serving and heatmaps agree)."""
        loaded = predictor.loaded
        return cls(
            predictor.model, loaded.preprocessing, loaded.label_names, loaded.task, method, layer,
            tta=loaded.tta,
        )  # fmt: skip

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, L)`` for a batch of prepared inputs."""
        with torch.no_grad():
            return self.model(x.to(self.device)).float()

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The served probabilities ``(N, L)`` of prepared inputs (with the recipe's TTA)."""
        with torch.no_grad():
            dims = self.preprocessing.spatial_dims
            x = x.to(self.device)
            return predict_probabilities(self.model, x, cast(Task, self.task), dims, self.tta)

    def score(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Probability of output ``index`` for a batch of prepared inputs (``(N,)``)."""
        return self.probabilities(x)[:, index].cpu()

    def maps(self, x: torch.Tensor, index: int) -> np.ndarray:
        """Raw maps ``(N, *spatial)`` at input resolution for prepared inputs ``x``."""
        return compute_maps(
            self.model, self.target_layer, self.method, x.to(self.device), index, self.layer
        )

    def explain(
        self, array: np.ndarray, finding: str | None = None, source: str = "scan"
    ) -> Heatmap:
        """The heatmap of ``finding`` (default: the most probable) on a read scan."""
        return self.explain_batch([array], finding, [source])[0]

    def explain_batch(
        self,
        arrays: Sequence[np.ndarray],
        finding: str | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[Heatmap]:
        """Heatmaps of several read scans, batched through the model where shapes allow."""
        asked = resolve_finding(self.label_names, self.task, finding)
        sources = (
            list(sources) if sources is not None else [f"scan {i}" for i in range(len(arrays))]
        )
        inputs = [
            prepare_scan(self.preprocessing, a, s) for a, s in zip(arrays, sources, strict=True)
        ]
        same_shape = len({tuple(t.shape) for t in inputs}) == 1
        groups = [list(range(len(inputs)))] if same_shape else [[i] for i in range(len(inputs))]
        out: list[Heatmap | None] = [None] * len(inputs)
        for group in groups:
            x = torch.stack([inputs[i] for i in group])
            logits = self.logits(x).cpu()
            probs = self.probabilities(x).cpu().numpy()
            chosen = [asked if asked is not None else default_finding(p, self.task) for p in probs]
            for index in sorted(set(chosen)):
                rows = [r for r, c in enumerate(chosen) if c == index]
                maps = self.maps(x[rows], index)
                for row, model_map in zip(rows, maps, strict=True):
                    i = group[row]
                    out[i] = Heatmap(
                        finding=self.label_names[index],
                        finding_index=index,
                        method=self.method,
                        layer=self.layer,
                        raw=map_to_scan(self.preprocessing, arrays[i], model_map),
                        model_map=model_map,
                        probability=float(probs[row, index]),
                        logit=float(logits[row, index]),
                    )
        return [h for h in out if h is not None]

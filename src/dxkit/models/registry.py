"""The model zoo: one name per architecture, built for 2D images or 3D volumes.

``create_model("resnet18", in_chans=1, num_classes=2)`` is how the engine, the predictor and
the tests get a network; the same name can have a 2D (timm) and a 3D (MONAI) version, chosen
by ``spatial_dims``. Every model maps ``(N, in_chans, *spatial)`` to logits
``(N, num_classes)`` and carries ``dxkit_cam_layer`` (the path of its Grad-CAM layer), so a
model rebuilt from a checkpoint's (name, arguments) knows where heatmaps come from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from dxkit.errors import ConfigError
from dxkit.models import backbones, volume3d
from dxkit.models.backbones import tag_model
from dxkit.models.pretrained import load_local_weights
from dxkit.models.small import SmallResNet

log = logging.getLogger(__name__)

# build(in_chans, num_classes, pretrained, **kwargs) -> tagged model; `pretrained` is a bool
# (hub weights or not) unless the spec says `handles_files` (then also a local path).
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """One registered (name, spatial_dims) pair: how to build it and what it is."""

    name: str
    spatial_dims: int
    build: Builder
    source: str
    hub_weights: bool
    # Smallest input side (pixels/voxels) the network accepts: DenseNet-121's pooling chain
    # fails below 29, so 28 px MedMNIST images must be resized for it (the engine can check).
    min_size: int
    handles_files: bool = False  # the builder loads a local weights path itself


def _small(spatial_dims: int) -> Builder:
    def build(in_chans: int, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
        model = SmallResNet(in_chans, num_classes, spatial_dims=spatial_dims, **kwargs)
        last = f"stages.{len(model.stages) - 1}"
        return tag_model(model, cam_layer=last, stem="stem.0", head="head")

    return build


def _no_hub(build: Callable[..., nn.Module]) -> Builder:
    def wrapped(in_chans: int, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
        return build(in_chans=in_chans, num_classes=num_classes, **kwargs)

    return wrapped


def _timm(name: str) -> Builder:
    def build(in_chans: int, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
        return backbones.build_timm(name, in_chans, num_classes, pretrained=pretrained, **kwargs)

    return build


def _alexnet(in_chans: int, num_classes: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    return backbones.build_alexnet(in_chans, num_classes, pretrained=pretrained, **kwargs)


def _slicestack(
    in_chans: int,
    num_classes: int,
    pretrained: bool | str | Path,
    backbone: str = "alexnet",
    **kwargs: Any,
) -> nn.Module:
    """A 2D backbone over the slices of a volume ``(N, C, D, H, W)``; weights go to the backbone."""
    from dxkit.models.slicestack import SliceStackNet  # slicestack imports this module

    return SliceStackNet(
        backbone, in_chans=in_chans, num_findings=num_classes, pretrained=pretrained, **kwargs
    )


_SPECS: list[ModelSpec] = [
    *(
        ModelSpec(name, 2, _timm(name), "timm", True, min_size=29 if "densenet" in name else 1)
        for name in backbones.TIMM_CAM_LAYERS
    ),
    ModelSpec("alexnet", 2, _alexnet, "torchvision", hub_weights=True, min_size=1),
    ModelSpec("smallresnet", 2, _small(2), "dxkit", hub_weights=False, min_size=1),
    *(
        ModelSpec(
            name,
            3,
            _no_hub(partial(volume3d.build_monai_resnet, name)),
            "monai",
            hub_weights=False,
            min_size=1,
        )
        for name in ("resnet18", "resnet34", "resnet50")
    ),
    ModelSpec(
        "densenet121",
        3,
        _no_hub(volume3d.build_monai_densenet121),
        "monai",
        hub_weights=False,
        min_size=29,
    ),
    ModelSpec("smallresnet", 3, _small(3), "dxkit", hub_weights=False, min_size=1),
    # MRNet-style slice stack as a volume classifier (kwargs: backbone=, pooling=, ...), so the
    # engine can train it on any (C, D, H, W) data; `pretrained` means backbone weights.
    ModelSpec(
        "slicestack", 3, _slicestack, "dxkit", hub_weights=True, min_size=1, handles_files=True
    ),
]
REGISTRY: dict[tuple[str, int], ModelSpec] = {(s.name, s.spatial_dims): s for s in _SPECS}


def list_models(spatial_dims: int | None = None) -> list[str]:
    """Sorted registered names, for one number of spatial dimensions or for all."""
    return sorted({n for n, d in REGISTRY if spatial_dims is None or d == spatial_dims})


def model_spec(name: str, spatial_dims: int = 2) -> ModelSpec:
    """The registry entry for ``name`` in ``spatial_dims`` dimensions (clear error if none)."""
    if spatial_dims not in (2, 3):
        raise ConfigError(
            f"model {name!r}: spatial_dims={spatial_dims!r} is not supported; use 2 (images) "
            "or 3 (volumes)"
        )
    spec = REGISTRY.get((name, spatial_dims))
    if spec is not None:
        return spec
    other = [d for n, d in REGISTRY if n == name]
    if other:
        raise ConfigError(
            f"model {name!r} has no {spatial_dims}D version (it supports spatial_dims "
            f"{other}); {spatial_dims}D models: {', '.join(list_models(spatial_dims))}"
        )
    raise ConfigError(
        f"unknown model {name!r}; valid names for spatial_dims={spatial_dims}: "
        f"{', '.join(list_models(spatial_dims))}"
    )


def create_model(
    name: str,
    in_chans: int,
    num_classes: int,
    spatial_dims: int = 2,
    pretrained: bool | str | Path = False,
    ensemble: int = 1,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered network that returns logits ``(N, num_classes)``.

    ``pretrained``: ``False`` (random init), ``True`` (the timm/torchvision hub weights,
    which need a network) or a path to a local state dict (first conv adapted to
    ``in_chans``, a head of another size skipped). Extra ``kwargs`` go to the underlying
    constructor (e.g. ``drop_rate`` for timm, ``widths`` for ``smallresnet``).
    ``ensemble=N`` (N ≥ 2) builds N independently initialised copies whose logits are averaged
    (``dxkit.models.ensemble.DeepEnsemble``).
    """
    if not isinstance(ensemble, int) or ensemble < 1:
        raise ConfigError(f"model {name!r}: ensemble={ensemble!r}; use a positive integer")
    if ensemble > 1:
        from dxkit.models.ensemble import DeepEnsemble

        members = [
            create_model(name, in_chans, num_classes, spatial_dims, pretrained, **kwargs)
            for _ in range(ensemble)
        ]
        ensembled = DeepEnsemble(members)
        ensembled.dxkit_name = name  # type: ignore[assignment]
        ensembled.dxkit_spatial_dims = spatial_dims  # type: ignore[assignment]
        return ensembled
    spec = model_spec(name, spatial_dims)
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"model {name!r}: in_chans={in_chans!r}; use a positive integer")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes={num_classes!r}; use a positive integer")
    from_hub = pretrained is True
    if from_hub and not spec.hub_weights:
        raise ConfigError(
            f"model {name!r} ({spatial_dims}D, {spec.source}) has no published weights to "
            "download; use pretrained=False or pass a local weights file path"
        )
    local_file = isinstance(pretrained, str | Path)
    try:
        model = spec.build(
            in_chans, num_classes, pretrained if spec.handles_files else from_hub, **kwargs
        )
    except TypeError as err:
        raise ConfigError(
            f"model {name!r} ({spec.source}) rejected the extra arguments {sorted(kwargs)}: {err}"
        ) from err
    if local_file and not spec.handles_files:
        load_local_weights(model, pretrained)  # type: ignore[arg-type]
    model.dxkit_name = name  # type: ignore[assignment]
    model.dxkit_spatial_dims = spatial_dims  # type: ignore[assignment]
    return model


def cam_target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM should read (the last convolutional stage) of ``model``.

    Uses the path recorded by ``create_model`` (``model.dxkit_cam_layer``); for a network
    built elsewhere, falls back to its last 2D/3D convolution.
    """
    path = getattr(model, "dxkit_cam_layer", None)
    if path is None:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
        if not convs:
            raise ConfigError(
                f"{type(model).__name__} has no convolution for Grad-CAM; build it with "
                "dxkit.models.create_model or set model.dxkit_cam_layer to a layer path"
            )
        log.info(
            "no dxkit_cam_layer on %s; using its last convolution %r",
            type(model).__name__,
            convs[-1],
        )
        path = convs[-1]
    try:
        return model.get_submodule(path)
    except AttributeError as err:
        raise ConfigError(
            f"{type(model).__name__}.dxkit_cam_layer={path!r} names no layer of the model"
        ) from err

"""What a heatmap is of: the finding (output index) and the layer, resolved with clear errors.

Targets are always the raw logit of the finding asked for: the single logit of a binary
model, the finding's own logit of a multi-label model, the class logit of a multi-class one.
The layer is the one the model registry recorded (``cam_target_layer``) unless the user
names another; a wrong finding or layer name is a ``ConfigError`` that lists the valid ones.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from dxkit.errors import ConfigError
from dxkit.models.registry import cam_target_layer


def resolve_finding(label_names: list[str], task: str, finding: str | None) -> int | None:
    """The output index of ``finding`` (None when not asked; case-insensitive match), or a
    ``ConfigError`` listing the model's findings."""
    if finding is None:
        return None
    if finding in label_names:
        return label_names.index(finding)
    folded = [n.casefold() for n in label_names]
    if finding.casefold() in folded:
        return folded.index(finding.casefold())
    raise ConfigError(
        f"finding {finding!r} is not one this {task} model predicts; valid findings: "
        f"{', '.join(repr(n) for n in label_names)}"
    )


def default_finding(probs: np.ndarray, task: str) -> int:
    """When none is asked: the only output (binary), else the most probable one."""
    return 0 if task == "binary" else int(np.argmax(probs))


def spatial_layer_names(model: nn.Module, max_depth: int = 3) -> list[str]:
    """Layer paths that hold convolutions (shallow ones first): the sensible CAM layers."""
    names = []
    for name, module in model.named_modules():
        if not name or name.count(".") >= max_depth:
            continue
        if any(isinstance(m, nn.Conv2d | nn.Conv3d) for m in module.modules()):
            names.append(name)
    return names


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """(path, module) of the CAM layer: the registered one, or ``layer`` if named."""
    if layer is None:
        module = cam_target_layer(model)
        path = next((n for n, m in model.named_modules() if m is module), "?")
        return path, module
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        valid = spatial_layer_names(model)
        raise ConfigError(
            f"layer {layer!r} does not exist in {type(model).__name__}; layers with "
            f"convolutions: {', '.join(valid)} (default: {resolve_layer(model, None)[0]!r})"
        ) from None

"""Pretrained weights: from the timm/torchvision hubs by name, or from a local file.

Hub downloads need a network; when there is none the user gets a ``CheckpointError`` that
says so and how to pass a local file instead. Local files are read with
``torch.load(..., weights_only=True)`` (never an arbitrary pickle) and fitted to the model:
the first convolution is adapted when the weights saw another number of input channels
(timm's rule: sum the filters for one channel, repeat and rescale otherwise), and a classifier
head of another size is skipped — both logged by key. Anything else that does not fit is an
error rather than a silently half-loaded network.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from dxkit.errors import CheckpointError, MissingFileError

log = logging.getLogger(__name__)

_OFFLINE_HINT = (
    "this machine cannot download them (no network?). Download the weights elsewhere, copy the "
    "file here and pass its path instead: pretrained='/path/to/weights.pth'"
)
# Wrappers that training code commonly puts around a state dict.
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
# Prefixes added by DDP (module.) or a Lightning module holding the network as `model`.
_PREFIXES = ("module.", "model.", "_orig_mod.")


@dataclass
class LoadReport:
    """What happened to each key of a weights file when it was loaded into a model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def timm_from_hub(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=True, ...)``, with a clear error when offline."""
    log.info("downloading pretrained weights for timm model %r", name)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as err:  # huggingface_hub / urllib connection and cache-miss errors
        raise CheckpointError(
            f"pretrained weights for {name!r} come from the timm hub, but {_OFFLINE_HINT} "
            f"({type(err).__name__}: {err})"
        ) from err


def torchvision_hub_state_dict(weights_enum: Any) -> dict[str, torch.Tensor]:
    """State dict of a torchvision ``*_Weights`` entry, with a clear error when offline."""
    log.info("downloading pretrained weights %s", weights_enum)
    try:
        return dict(weights_enum.get_state_dict(progress=False))
    except OSError as err:  # urllib.error.URLError and friends
        raise CheckpointError(
            f"pretrained weights {weights_enum} come from {weights_enum.url}, but {_OFFLINE_HINT} "
            f"({type(err).__name__}: {err})"
        ) from err


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file, loaded without running pickle code.

    ``.safetensors`` (what the Hugging Face hub serves timm weights as) is read with
    safetensors; anything else with ``torch.load(weights_only=True)``, unwrapping a
    training checkpoint's ``state_dict``/``model`` entry.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"pretrained weights file {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        try:
            return dict(safetensors.torch.load_file(str(path), device="cpu"))
        except (safetensors.SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects besides tensors and was refused (weights are only "
            f"loaded with weights_only=True); save it with torch.save(model.state_dict(), ...) "
            f"({err})"
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch weights file: {err}") from err
    for key in _STATE_DICT_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path} does not hold a state dict (got {type(obj).__name__}); "
            "save weights with torch.save(model.state_dict(), path)"
        )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries {bad[:5]} are not tensors; expected a state dict")
    return dict(obj)


def _first_conv_key(model: nn.Module) -> str | None:
    stem = getattr(model, "dxkit_stem", None)
    if stem:
        return f"{stem}.weight"
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d):
            return f"{name}.weight"
    return None


def _strip_prefix(state: dict[str, torch.Tensor], target: Mapping[str, Any]) -> dict[str, Any]:
    if set(state) & set(target):
        return state
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if set(stripped) & set(target):
                return stripped
    return state


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fit a first-convolution weight ``(O, I, k...)`` to ``in_chans`` input channels.

    timm's ``adapt_input_conv`` (sum for 1 channel, repeat and rescale by I/in_chans
    otherwise) so a grey image gives the same response as its 3-channel copy; 3D kernels are
    folded to 2D for the call and unfolded after.
    """
    shape = weight.shape
    folded = weight.reshape(shape[0], shape[1], shape[2], -1)
    adapted = adapt_input_conv(in_chans, folded.clone(), base_chans=shape[1])
    return adapted.reshape(shape[0], in_chans, *shape[2:])


def load_adapted_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> LoadReport:
    """Load ``state`` into ``model``: adapt the first conv, skip a mismatching head, else strict.

    The head is the module named by ``model.dxkit_head`` (set by the registry); missing head
    keys keep the model's fresh initialisation.
    """
    target = model.state_dict()
    state = _strip_prefix(dict(state), target)
    stem_key = _first_conv_key(model)
    head = getattr(model, "dxkit_head", None)

    def is_head(key: str) -> bool:
        return bool(head) and (key == head or key.startswith(f"{head}."))

    report = LoadReport(source=source)
    fitted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in state.items():
        want = target.get(key)
        if want is None or want.shape != value.shape:
            if is_head(key):
                report.skipped.append(key)
            elif want is None:
                unexpected.append(key)
            elif (
                key == stem_key
                and value.ndim == want.ndim >= 3
                and value.shape[0] == want.shape[0]
                and value.shape[2:] == want.shape[2:]
            ):
                fitted[key] = adapt_first_conv(value.float(), want.shape[1]).to(want.dtype)
                report.adapted.append(key)
            else:
                mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(want.shape)}")
            continue
        fitted[key] = value
        report.loaded.append(key)
    missing = [
        k
        for k in target
        if k not in fitted and not is_head(k) and not k.endswith("num_batches_tracked")
    ]
    if unexpected or mismatched or missing:
        parts = []
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:5]}")
        if missing:
            parts.append(f"{len(missing)} model keys absent from the file, e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown keys, e.g. {unexpected[:5]}")
        raise CheckpointError(
            f"weights from {source} do not fit model {type(model).__name__}: "
            + "; ".join(parts)
            + ". Check that the file was saved from the same architecture (model name)."
        )
    model.load_state_dict(fitted, strict=False)
    if report.adapted:
        log.info(
            "%s: adapted first convolution %s to the model's input channels", source, report.adapted
        )
    if report.skipped:
        log.info(
            "%s: skipped classifier keys of another size %s (left freshly initialised)",
            source,
            report.skipped,
        )
    log.info("%s: loaded %d tensors", source, len(report.loaded) + len(report.adapted))
    return report


def load_local_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Read a local weights file (``weights_only``) and load it with ``load_adapted_state_dict``."""
    return load_adapted_state_dict(model, read_state_dict(path), source=str(path))

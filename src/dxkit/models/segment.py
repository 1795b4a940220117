"""2-D segmenters: a U-Net (or a sibling decoder) on a registered encoder, via smp.

Why segmentation-models-pytorch (smp) rather than MONAI's ``UNet``: MONAI's ``UNet`` is a
plain residual-unit U-Net whose width and depth you set by hand and which has no pretrained
encoder; its ``FlexibleUNet`` does take a backbone, but only from a short list (EfficientNet,
ResNet). smp pairs the U-Net decoder with any of ~100 registered encoders (its own ResNets,
every timm model through ``tu-<name>``), loads their ImageNet weights by name, adapts the first
convolution to 1-channel radiographs, and is what the SIIM pneumothorax solutions used. The
encoder is the same ResNet family our classifiers use, so heatmaps and pretraining carry over.
MONAI stays our choice for 3-D networks.

Pretrained encoders: ``pretrained=True`` or a weights name (``"imagenet"``, ``"ssl"``...) asks
smp to fetch them (needs the network); a file path loads a local state dict instead
(``torch.load(weights_only=True)`` or safetensors), e.g. torchvision's ``resnet18-*.pth``.
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path
from typing import Any, cast

import segmentation_models_pytorch as smp
import torch
from timm.models import adapt_input_conv
from torch import nn

from dxkit.errors import CheckpointError, ConfigError, MissingFileError

logger = logging.getLogger(__name__)

# Our name → smp architecture name (``smp.create_model(arch=...)``).
SEGMENTERS: dict[str, str] = {
    "unet": "unet",
    "unetplusplus": "unetplusplus",
    "fpn": "fpn",
    "deeplabv3plus": "deeplabv3plus",
}
_WEIGHT_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".safetensors"}


def _is_weights_file(pretrained: str | Path) -> bool:
    if isinstance(pretrained, Path):
        return True
    return Path(pretrained).suffix in _WEIGHT_SUFFIXES or "/" in pretrained or "\\" in pretrained


def _encoder_weights_name(encoder: str, pretrained: bool | str) -> str | bool | None:
    if pretrained is False:
        return None
    if encoder.startswith("tu-"):
        return True  # timm encoders choose their weights by tag in the name: tu-resnet18.a1_in1k
    return "imagenet" if pretrained is True else str(pretrained)


def create_segmenter(
    name: str = "unet",
    encoder: str = "resnet18",
    in_chans: int = 1,
    num_classes: int = 1,
    pretrained: bool | str | Path = False,
    classifier: bool = False,
    foreground_prior: float | None = None,
) -> nn.Module:
    """A segmenter returning logits ``(N, num_classes, H, W)``; H and W must be multiples of 32.

    ``pretrained``: ``False`` (random init, the default), ``True`` / a weights name (download
    through smp), or a local weights file for the encoder. ``classifier=True`` adds smp's
    ``aux_params`` head (pooling + linear on the encoder's deepest features); the model then
    returns ``(mask_logits, image_logits (N, num_classes))``.
    """
    arch = SEGMENTERS.get(name.lower())
    if arch is None:
        raise ConfigError(f"unknown segmenter {name!r}; choose one of {sorted(SEGMENTERS)}")
    if in_chans < 1 or num_classes < 1:
        raise ConfigError(
            f"segmenter needs in_chans ≥ 1 and num_classes ≥ 1, got {in_chans}, {num_classes}"
        )
    local = not isinstance(pretrained, bool) and _is_weights_file(pretrained)
    weights = None if local else _encoder_weights_name(encoder, pretrained)  # type: ignore[arg-type]
    try:
        model = smp.create_model(
            arch=arch,
            encoder_name=encoder,
            encoder_weights=weights,
            in_channels=in_chans,
            classes=num_classes,
            aux_params={"classes": num_classes} if classifier else None,
        )
    except KeyError as exc:
        raise ConfigError(f"segmenter {name!r} with encoder {encoder!r}: {exc.args[0]}") from exc
    except (OSError, RuntimeError, ValueError) as exc:
        if weights is None:
            raise ConfigError(f"cannot build segmenter {name!r}/{encoder!r}: {exc}") from exc
        raise CheckpointError(
            f"could not fetch pretrained {weights!r} weights for encoder {encoder!r} ({exc}); "
            "this needs the network — pass a local weights file as pretrained=<path> instead, "
            "or pretrained=False"
        ) from exc
    if local:
        load_encoder_weights(model, Path(pretrained), in_chans=in_chans)  # type: ignore[arg-type]
    if foreground_prior is not None:
        init_foreground_prior(model, foreground_prior)
    return model


def init_foreground_prior(model: nn.Module, prior: float) -> None:
    """Start the output bias at ``logit(prior)`` so every pixel begins near the expected
    foreground rate instead of smp's p = 0.5 (the focal-loss paper's prior initialisation):
    without it the first hundreds of steps only learn that most pixels are background."""
    if not 0.0 < prior < 1.0:
        raise ConfigError(f"foreground_prior must be in (0, 1), got {prior}; e.g. 0.01")
    # smp's SegmentationHead is an nn.Sequential whose first layer is the biased output conv
    head = cast(nn.Sequential, model.segmentation_head)[0]
    nn.init.constant_(cast(torch.Tensor, head.bias), math.log(prior / (1.0 - prior)))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MissingFileError(f"{path}: no such encoder weights file; check the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"{path}: cannot read encoder weights ({exc}); it must be a state dict saved with "
            "torch.save (plain tensors only) or a .safetensors file"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):  # Lightning / common wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; save model.state_dict()")
    return state


def _is_head(key: str) -> bool:
    return any(part in ("fc", "head", "classifier") for part in key.split(".")[:2])


def load_encoder_weights(model: nn.Module, path: Path | str, *, in_chans: int = 1) -> None:
    """Load a local encoder state dict into ``model.encoder`` (strict, after light fixes).

    Accepted: a bare encoder/backbone state dict (torchvision or timm ResNet; its classifier
    ``fc.*`` is dropped), a whole-segmenter state dict (``encoder.*`` keys are used) or either
    wrapped by Lightning/DDP. A 3-channel first convolution is adapted to ``in_chans`` the way
    timm does (summed for 1 channel).
    """
    path = Path(path)
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise CheckpointError(f"{path}: the model has no .encoder to load weights into")
    state = {
        k.removeprefix("module.").removeprefix("model."): v
        for k, v in _read_state_dict(path).items()
    }
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    target = encoder.state_dict()
    if all(k.startswith("model.") for k in target):  # smp's timm wrapper nests under .model
        state = {f"model.{k}": v for k, v in state.items()}
    # The backbone's classifier head has no place in a segmenter's encoder.
    state = {k: v for k, v in state.items() if k in target or not _is_head(k)}
    for key, value in state.items():
        expected = target.get(key)
        if (
            expected is not None
            and value.ndim == 4
            and expected.ndim == 4
            and value.shape[1] != expected.shape[1]
            and value.shape[0] == expected.shape[0]
        ):
            state[key] = adapt_input_conv(in_chans, value)
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: does not fit encoder {type(encoder).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong)} with the wrong shape (e.g. {wrong[:3]}); "
            "use weights of the same encoder architecture"
        )
    encoder.load_state_dict(state)
    logger.info("loaded encoder weights from %s (%d tensors)", path, len(state))

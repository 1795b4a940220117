"""2D backbones from timm and torchvision, built to dxkit's model conventions.

Every builder returns a module that maps ``(N, in_chans, H, W)`` to logits
``(N, num_classes)`` and carries three path strings the rest of dxkit reads:
``dxkit_cam_layer`` (the last convolutional stage, for Grad-CAM), ``dxkit_stem`` (the first
convolution, adapted when weights were trained on another channel count) and ``dxkit_head``
(the classifier, skipped when loading weights trained for another label set).
"""

from __future__ import annotations

import logging
from typing import Any

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dxkit.models import pretrained as weights

log = logging.getLogger(__name__)

# timm name -> (Grad-CAM layer: the output of the last convolutional stage before pooling).
TIMM_CAM_LAYERS: dict[str, str] = {
    "resnet18": "layer4",
    "resnet34": "layer4",
    "resnet50": "layer4",
    "densenet121": "features",  # ends with norm5 + ReLU (BatchNormAct2d)
    "efficientnet_b0": "bn2",  # conv_head -> BN + SiLU, the last spatial map
    # MobileNetV3 pools *before* its conv_head, so the last spatial map is the blocks' output.
    "mobilenetv3_small_100": "blocks",
}


def tag_model(model: nn.Module, cam_layer: str, stem: str, head: str) -> nn.Module:
    """Record the Grad-CAM layer, first convolution and classifier paths on ``model``."""
    model.dxkit_cam_layer = cam_layer  # type: ignore[assignment]
    model.dxkit_stem = stem  # type: ignore[assignment]
    model.dxkit_head = head  # type: ignore[assignment]
    return model


def build_timm(
    name: str, in_chans: int, num_classes: int, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """A timm backbone; ``pretrained=True`` fetches its hub weights (timm adapts 3→1 channels)."""
    model: Any
    if pretrained:
        model = weights.timm_from_hub(name, in_chans=in_chans, num_classes=num_classes, **kwargs)
    else:
        model = timm.create_model(
            name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs
        )
    cfg = model.pretrained_cfg
    return tag_model(model, TIMM_CAM_LAYERS[name], cfg["first_conv"], cfg["classifier"])


def drop_classifier(model: nn.Module) -> nn.Module:
    """Remove everything ``forward_features`` does not use, so no parameter is left unused.

    ``reset_classifier(0)`` (timm's interface, also on dxkit's own models) drops the last
    linear layer; MobileNetV3 also keeps a 1×1 ``conv_head`` after its pooling, which would
    never receive a gradient (and makes DDP fail without ``find_unused_parameters``).
    """
    model.reset_classifier(0)  # type: ignore[operator]
    if isinstance(model, timm.models.MobileNetV3):
        model.conv_head = nn.Identity()
        model.norm_head = nn.Identity()
    return model


class AlexNet(nn.Module):
    """torchvision's AlexNet with any input channel count, small inputs and timm's interface.

    The weights' layout is torchvision's (``features.*``, ``classifier.*``) so its ImageNet
    state dict loads unchanged. Inputs smaller than ``min_input_size`` (63 px, the smallest
    the three stride-2 max-pools survive) are resized up before the features rather than
    changing strides, which would change what pretrained filters mean. ``num_features`` is
    the channel count of the feature map (256), what the MRNet model pools over slices.
    """

    min_input_size = 63

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        base = torchvision.models.alexnet(weights=None, num_classes=num_classes, dropout=dropout)
        self.features = base.features
        if in_chans != 3:
            self.features[0] = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
        self.avgpool = base.avgpool
        self.classifier: nn.Module = base.classifier
        self.num_features = 256
        self.num_classes = num_classes

    def reset_classifier(self, num_classes: int) -> None:
        """New last linear layer; ``0`` drops the whole MLP (forward returns pooled features)."""
        self.num_classes = num_classes
        if num_classes == 0:
            self.classifier = nn.Identity()
        else:
            if isinstance(self.classifier, nn.Identity):
                base = torchvision.models.alexnet(weights=None, num_classes=num_classes)
                self.classifier = base.classifier
            mlp = self.classifier
            assert isinstance(mlp, nn.Sequential)  # torchvision's classifier MLP
            mlp[6] = nn.Linear(4096, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``(N, 256, h, w)``; tiny inputs are upsampled to 63 px first."""
        height, width = x.shape[-2:]
        if min(height, width) < self.min_input_size:
            size = (max(height, self.min_input_size), max(width, self.min_input_size))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """torchvision's adaptive pooling to 6×6 and the MLP classifier."""
        pooled = torch.flatten(self.avgpool(features), 1)
        return pooled if pre_logits else self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_alexnet(
    in_chans: int, num_classes: int, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """AlexNet; ``pretrained=True`` loads torchvision's ImageNet weights, adapting conv1."""
    model = tag_model(
        AlexNet(in_chans, num_classes, **kwargs),
        cam_layer="features.11",  # ReLU after conv5: 13×13 at 224 px, before the last max-pool
        stem="features.0",
        head="classifier.6",
    )
    if pretrained:
        state = weights.torchvision_hub_state_dict(torchvision.models.AlexNet_Weights.IMAGENET1K_V1)
        weights.load_adapted_state_dict(model, state, source="torchvision AlexNet IMAGENET1K_V1")
    return model

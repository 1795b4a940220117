"""3D classifiers for volumes ``(N, C, D, H, W)``: MONAI's ResNets and DenseNet-121.

MONAI already implements these networks dimension-generically, so dxkit only fixes their
arguments to its conventions (``in_chans``, ``num_classes``) and tags the layers Grad-CAM,
weight loading and the head replacement need (see ``backbones.tag_model``). For 28–64 voxel
volumes the CPU-efficient ``SmallResNet`` in ``small.py`` is the better choice.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dxkit.models.backbones import tag_model

# MONAI is imported inside the builders: `import monai.networks.nets` costs ~8 CPU-seconds,
# which every `import dxkit.models` (CLI start-up, server, tests) would otherwise pay.


def build_monai_resnet(name: str, in_chans: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """MONAI ResNet (MedicalNet layout) for 3D volumes; extra kwargs go to ``monai.ResNet``."""
    from monai.networks import nets

    resnets = {"resnet18": nets.resnet18, "resnet34": nets.resnet34, "resnet50": nets.resnet50}
    model = resnets[name](
        spatial_dims=3, n_input_channels=in_chans, num_classes=num_classes, **kwargs
    )
    return tag_model(model, cam_layer="layer4", stem="conv1", head="fc")


def build_monai_densenet121(in_chans: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """MONAI DenseNet-121 for 3D volumes (needs at least 29 voxels per side)."""
    from monai.networks import nets

    model = nets.DenseNet121(
        spatial_dims=3, in_channels=in_chans, out_channels=num_classes, **kwargs
    )
    return tag_model(model, cam_layer="features", stem="features.conv0", head="class_layers.out")

"""SmallResNet's memory layout: channels-last only where its CPU kernels are sound."""

from __future__ import annotations

import subprocess
import sys

from dxkit.models.registry import create_model

_STEPS = """
import torch
from dxkit.models.registry import create_model
m = create_model("smallresnet", in_chans=3, num_classes=1, spatial_dims=2,
                 widths=[8, 16], depths=[1, 1], strides=[2, 2])
for _ in range(3):
    m(torch.randn(16, 3, 64, 64)).mean().backward()
"""


def test_narrow_nets_keep_the_default_layout_and_default_nets_go_channels_last() -> None:
    narrow = create_model("smallresnet", 3, 1, widths=[8, 16], depths=[1, 1], strides=[2, 2])
    assert not narrow.channels_last
    assert create_model("smallresnet", 3, 1).channels_last


def test_a_narrow_net_trains_without_crashing_the_process() -> None:
    # In a child process: the failure this guards against is a heap corruption that aborts
    # the interpreter (it would take the whole test session down with it).
    proc = subprocess.run([sys.executable, "-c", _STEPS], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]

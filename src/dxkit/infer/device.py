"""Where and at which precision a model runs: one rule for training and inference.

CUDA when present (and allowed by ``train.accelerator``), else the CPU; mixed precision only
on CUDA (``train.precision: auto`` → ``16-mixed``), always fp32 on the CPU. Lightning's
Trainer gets the same answer through ``resolve_precision`` (``dxkit.train.fit``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

# (done, total): how a long loop reports progress; the CLI turns it into a rich bar.
ProgressCallback = Callable[[int, int], None]


def cuda_allowed(accelerator: str = "auto") -> bool:
    """Whether ``accelerator`` (Lightning's name) lets this machine use CUDA."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(setting: str = "auto", accelerator: str = "auto") -> str:
    """Lightning's precision string for a ``train.precision`` setting."""
    if setting == "auto":
        return "16-mixed" if cuda_allowed(accelerator) else "32-true"
    return "32-true" if setting == "32" else setting


@dataclass(frozen=True)
class Runtime:
    """The device a model runs on and its autocast dtype (None: plain fp32)."""

    device: torch.device
    autocast: torch.dtype | None = None

    def amp(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast)


def runtime_for(config: Mapping[str, Any] | None = None, device: str | None = None) -> Runtime:
    """The runtime of a model trained with ``config`` (a checkpoint's saved config dict):
    the training rule (``train.accelerator``, ``train.precision``) on this machine; an
    explicit ``device`` wins (``cpu`` always runs fp32)."""
    train = dict((config or {}).get("train") or {})
    accelerator = str(train.get("accelerator", "auto"))
    if device is not None:
        dev = torch.device(device)
    else:
        dev = torch.device("cuda" if cuda_allowed(accelerator) else "cpu")
    if dev.type != "cuda":
        return Runtime(dev)
    precision = resolve_precision(str(train.get("precision", "auto")), "cuda")
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    return Runtime(dev, dtype)

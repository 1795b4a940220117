"""Lightning callbacks and plugins dxkit adds: atomic checkpoints, freeze/unfreeze and
progressive resizing. Each builds on Lightning's own base classes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol, cast

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dxkit.train.module import ClassifierModule, network, split_head

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file and rename it into place, so a run
    killed mid-save keeps its previous good checkpoint (Lightning writes in place)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


class FreezeBody(BaseFinetuning):
    """Train only the head for ``epochs`` epochs, then the whole network.

    The body's parameters stay in the optimiser from the start (with the discriminative
    learning rate of their own group), so schedules such as one-cycle keep working.
    """

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        if self.epochs > 0:
            self.freeze(_body_modules(pl_module), train_bn=False)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Any) -> None:
        if epoch == self.epochs and self.epochs > 0:
            self.make_trainable(_body_modules(pl_module))
            log.info("epoch %d: body unfrozen", epoch)

    # BaseFinetuning tracks new param groups; we add none, so keep its bookkeeping quiet.
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return None


def _body_modules(pl_module: L.LightningModule) -> list[Any]:
    model = network(pl_module)
    body, _ = split_head(model)
    body_ids = {id(p) for p in body}
    return [
        m
        for m in model.modules()
        if not list(m.children()) and any(id(p) in body_ids for p in m.parameters())
    ]


class _TrainSized(Protocol):
    """A Lightning module that resizes training batches to ``train_size`` (None = native)."""

    train_size: int | None


class ProgressiveResize(Callback):
    """Train at smaller input sizes first (a schedule of [epoch, size]); validation and the
    saved preprocessing always use the full size."""

    def __init__(self, schedule: list[tuple[int, int]]) -> None:
        self.schedule = sorted(schedule)

    def size_at(self, epoch: int) -> int | None:
        size = None
        for start, s in self.schedule:
            if epoch >= start:
                size = s
        return size

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(pl_module, ClassifierModule) or hasattr(pl_module, "train_size"):
            module = cast(_TrainSized, pl_module)
            size = self.size_at(trainer.current_epoch)
            if size != module.train_size:
                log.info("epoch %d: training at %s px", trainer.current_epoch, size)
            module.train_size = size

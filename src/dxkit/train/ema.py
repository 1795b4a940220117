"""An exponential moving average (EMA) of the weights, validated and saved instead of the
raw weights (``train.ema_decay``).

On tiny validation splits (BreastMNIST has 78 images) the raw weights' validation AUC jumps
from epoch to epoch, so picking the best epoch partly picks noise. The average of the recent
weights moves smoothly, so the selected checkpoint is less of a lucky draw. The averaging is
PyTorch's ``AveragedModel`` with its EMA update; batch-norm statistics are averaged too, so
the saved network is self-consistent.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dxkit.train.module import network


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in itertools.chain(module.parameters(), module.buffers())]


class WeightEMA(Callback):
    """Update an EMA of ``pl_module.model`` after every optimiser step; swap it in for
    validation, and write it as the checkpoint's weights (so ``best.ckpt`` holds the model
    that scored). The raw training weights ride along in the callback state for ``--resume``.
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.average: AveragedModel | None = None
        self._model: nn.Module | None = None
        self._restored: dict[str, Any] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._model = model = network(pl_module)
        self.average = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True
        )
        if self._restored is not None:
            # Lightning loaded the checkpoint's (averaged) weights into the module: put the
            # raw training weights back and continue the average where it stopped.
            model.load_state_dict(self._restored["raw"])
            self.average.load_state_dict(self._restored["average"])
            self._restored = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if self.average is not None:
            self.average.update_parameters(network(pl_module))

    def _swap(self, pl_module: L.LightningModule) -> None:
        """Exchange the live and the averaged weights in place (its own inverse)."""
        assert self.average is not None
        model = network(pl_module)
        with torch.no_grad():
            for a, b in zip(_tensors(self.average.module), _tensors(model), strict=True):
                tmp = b.clone()
                b.copy_(a)
                a.copy_(tmp)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is not None and trainer.state.fn == "fit":
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks run before the module's own epoch-end hook, which only scores the
        # predictions already collected, so swapping back here is safe.
        if self.average is not None and trainer.state.fn == "fit":
            self._swap(pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.average is None:
            return
        state = checkpoint["state_dict"]
        for key, value in self.average.module.state_dict().items():
            state[f"model.{key}"] = value.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        if self.average is None or self._model is None:
            return {}
        # Checkpoints are written outside validation, so the module holds the raw weights.
        raw = {k: v.detach().clone() for k, v in self._model.state_dict().items()}
        return {"average": self.average.state_dict(), "raw": raw}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict or None

"""One device/precision rule for training and inference: CUDA (mixed precision) when present
and allowed, fp32 on the CPU; the Trainer's precision comes from the same function."""

from __future__ import annotations

import pytest
import torch

from dxkit.infer.device import resolve_precision, runtime_for
from dxkit.train.config import config_from_dict
from dxkit.train.fit import _precision


def test_cpu_machine_runs_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rt = runtime_for({"train": {"precision": "auto"}})
    assert rt.device.type == "cpu" and rt.autocast is None
    assert resolve_precision("auto") == "32-true"
    assert runtime_for({"train": {"precision": "16-mixed"}}).autocast is None  # CPU: fp32


def test_cuda_machine_uses_training_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime_for({}).device.type == "cuda"
    assert runtime_for({}).autocast is torch.float16  # auto → 16-mixed, as the Trainer
    assert runtime_for({"train": {"precision": "bf16-mixed"}}).autocast is torch.bfloat16
    assert runtime_for({"train": {"precision": "32"}}).autocast is None
    assert runtime_for({"train": {"accelerator": "cpu"}}).device.type == "cpu"
    assert runtime_for({}, device="cpu").autocast is None  # an explicit device wins
    cfg = config_from_dict({"name": "x"})
    assert _precision(cfg) == resolve_precision("auto") == "16-mixed"


def test_evaluation_refuses_a_tta_the_thresholds_were_not_fitted_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dxkit.errors import ConfigError
    from dxkit.evaluate.run import served_tta

    assert served_tta(False, None, tmp_path) is False and served_tta(True, True, tmp_path)
    with pytest.raises(ConfigError, match=r"fitted on plain probabilities.*without --tta"):
        served_tta(False, True, tmp_path / "bundle.ckpt")

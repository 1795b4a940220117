"""The exam bench's fixture models and verdict (``dxkit.bench.exam_latency``): a trained
trunk handed to a new network through ``model.pretrained`` arrives intact (and the file
stays small), and the "faster again" verdict compares the two models on the same path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dxkit.bench.exam_latency import AUC_TOLERANCE, trunk_weights, verdict
from dxkit.models.slicestack import SliceStackNet


def test_trunk_weights_start_a_new_network_from_the_trained_trunk(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = SliceStackNet("alexnet", in_chans=1, num_findings=1)
    path = trunk_weights(trained, tmp_path / "axial.pt")
    torch.manual_seed(1)  # a different fresh initialisation
    warm = SliceStackNet("alexnet", in_chans=1, num_findings=3, pretrained=str(path))
    for (name, want), (_, got) in zip(
        trained.backbone.state_dict().items(), warm.backbone.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(got, want, msg=name)
    # AlexNet's 4096-wide image classifier (dropped by slice-stack networks) is not written
    n_trunk = sum(v.numel() for v in trained.backbone.state_dict().values())
    assert path.stat().st_size < 4 * n_trunk * 1.1


def _row(model: str, path: str, ms: float, d_auc: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "path": path, "ms": ms, "max_dp": 0.0}
    if d_auc is not None:
        row["d_auc"] = d_auc
    return row


def _rows(mt_int8_d_auc: float) -> list[dict[str, Any]]:
    return [
        _row("per_finding", "loop", 9000.0),
        _row("per_finding", "eager", 7000.0),
        _row("per_finding", "int8", 1500.0, 0.001),
        _row("multitask", "loop", 3000.0),
        _row("multitask", "eager", 1000.0),
        _row("multitask", "int8", 400.0, mt_int8_d_auc),
    ]


def test_verdict_compares_the_models_on_the_same_path() -> None:
    text = "\n".join(verdict(_rows(0.002), loop=9000.0))
    assert "**6.00×** the slice loop: target ≥ 3× **met**" in text
    # same path: 1500 / 400 = 3.75; this is the figure the verdict uses
    assert "**3.75×** the nine networks: target ≥ 2.5× **met**" in text
    assert "the figure the verdict uses" in text and "**int8**, 400 ms" in text


def test_verdict_not_met_when_the_multitask_auc_changes_on_that_path() -> None:
    text = "\n".join(verdict(_rows(AUC_TOLERANCE + 0.01), loop=9000.0))
    assert "**3.75×** the nine networks: target ≥ 2.5× **not met**" in text
    assert "AUC changes on this path" in text
    # the fastest unchanged-AUC multi-task path is then fp32 eager: 1500 / 1000 = 1.50
    assert "multi-task **eager**, 1000 ms, 1.50× the nine networks' fastest" in text

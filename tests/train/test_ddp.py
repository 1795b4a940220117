"""Multi-process training through Lightning's DDP, proven with 2 CPU processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from dxkit.infer.checkpoint import load_checkpoint, read_checkpoint

from .test_engine import toy_config


def test_two_process_ddp_yields_a_loadable_checkpoint(tmp_path: Path) -> None:
    raw = toy_config(tmp_path, epochs=1)
    raw["train"].update({"accelerator": "cpu", "devices": 2, "strategy": "ddp"})
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    cmd = [sys.executable, "-m", "dxkit", "train", str(config), "--no-evaluate"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["toy"]  # both ranks wrote into one run folder
    ckpt = runs[0] / "checkpoints" / "last.ckpt"
    state = read_checkpoint(ckpt)["state_dict"]
    loaded = load_checkpoint(ckpt)  # rebuilds the model: shapes match the registry's model
    own = {f"model.{k}": v.shape for k, v in loaded.model.state_dict().items()}
    assert {k: v.shape for k, v in state.items()} == own

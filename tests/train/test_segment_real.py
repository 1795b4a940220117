"""The SIIM pipeline on the 10 real sample radiographs (1024² JPEG DICOM): one epoch at
64 px through `dxkit train` → `dxkit evaluate` → `dxkit predict`; every output is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxkit.cli import main
from dxkit.preprocess.rle import decode_rle, read_rle_csv

REPO = Path(__file__).resolve().parents[2]


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


@pytest.mark.slow  # decodes ten 1024² JPEG radiographs three times (~1 min on 2 cores)
def test_real_sample_pipeline_writes_every_output(siim_dir: Path, tmp_path: Path) -> None:
    overrides = [
        f"data.path={siim_dir}",
        f"data.csv={siim_dir / 'train-rle-sample.csv'}",
        f"output_dir={tmp_path / 'runs'}",
        "preprocess.size=64",
        "train.epochs=1",
        "train.progressive_resize=null",
        "evaluate.bootstrap=50",
    ]
    args = ["train", str(REPO / "configs" / "siim.yaml"), "--no-evaluate"]
    assert run_cli([*args, *(a for o in overrides for a in ("--set", o))]) == 0
    run = tmp_path / "runs" / "siim"
    assert run_cli(["evaluate", str(run)]) == 0
    doc = json.loads((run / "report.json").read_text())
    dice = doc["extra"]["SIIM Dice (per image, empty rule, at the original resolution)"]
    assert dice["images"] == 2 and 0.0 <= dice["mean Dice"] <= 1.0  # 20 % of 10 patients
    assert (run / "report.html").stat().st_size > 10_000

    out = tmp_path / "pred"
    assert run_cli(["predict", str(run), str(siim_dir), "--out", str(out)]) == 0
    submission = read_rle_csv(out / "submission.csv")
    assert len(submission) == 10 and (out / "predictions.csv").is_file()
    for image_id, (rle,) in submission.items():
        mask = np.asarray(Image.open(out / "masks" / f"{image_id}.png"))
        assert mask.shape == (1024, 1024)
        assert np.array_equal(decode_rle(rle, (1024, 1024)), mask // 255)
        assert np.asarray(Image.open(out / "overlays" / f"{image_id}.png")).shape == (1024, 1024, 3)

"""Issue 15, finding 4: MRNet as downloaded — label rows without volumes skipped with one
summary line by default; ``dxkit predict BUNDLE MRNET_ROOT/valid [--exam ID]`` reads the
split folder directly."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from tests.serve.test_exam_predict import make_bundle

from dxkit.cli import main
from dxkit.data.sources.mrnet import load_mrnet, split_exams
from dxkit.data.synthetic_mrnet import write_mrnet_fixture
from dxkit.errors import DataSourceError, MissingFileError
from dxkit.infer.exam_predict import ExamPredictor


@pytest.fixture(scope="module")
def mrnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_mrnet_fixture(tmp_path_factory.mktemp("dl") / "MRNet-v1.0", 4, 3, size=32)
    for finding in ("abnormal", "acl", "meniscus"):  # the CSVs list 40 more exams than exist
        with (root / f"train-{finding}.csv").open("a") as fh:
            fh.writelines(f"{i:04d},0\n" for i in range(100, 140))
    return root


def test_rows_without_volumes_are_one_summary_line(
    mrnet: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dxkit.data.sources.mrnet"):
        exams = load_mrnet(mrnet, "train")
    assert len(exams) == 4 and len(exams.skipped) == 40
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "40 exams" in line and "0100, 0101" in line and "exam.strict: true" in line
    with pytest.raises(DataSourceError, match="exam 0100: listed in"):
        load_mrnet(mrnet, "train", strict=True)


def test_split_folder_yields_its_exams(mrnet: Path) -> None:
    exams = split_exams(mrnet / "valid")
    assert [e.exam_id for e in exams] == ["0004", "0005", "0006"]
    assert [e.exam_id for e in split_exams(mrnet / "valid", "5")] == ["0005"]
    with pytest.raises(MissingFileError, match="no exam 0099"):
        split_exams(mrnet / "valid", "0099")


def test_predict_reads_the_mrnet_split(mrnet: Path, tmp_path: Path) -> None:
    bundle, _ = make_bundle(tmp_path / "bundle.ckpt")
    out = tmp_path / "pred.csv"
    with pytest.raises(SystemExit) as code:
        main(["predict", str(bundle), str(mrnet / "valid"), "--out", str(out)])
    assert code.value.code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["exam"] for r in rows] == ["valid/0004", "valid/0005", "valid/0006"]
    predictor = ExamPredictor.from_bundle(bundle)
    ref = predictor.predict_exams(split_exams(mrnet / "valid", "0005"))[0]
    assert float(rows[1]["abnormal"]) == pytest.approx(ref.probabilities["abnormal"], abs=1e-6)
    with pytest.raises(SystemExit) as code:
        main(["predict", str(bundle), str(mrnet / "valid"), "--exam", "6", "--out", str(out)])
    assert code.value.code == 0
    assert [r["exam"] for r in csv.DictReader(out.open())] == ["valid/0006"]

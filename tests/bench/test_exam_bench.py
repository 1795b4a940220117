"""``dxkit bench exam``: the command exists, rejects bad options, and the latency code runs
end to end on a tiny exam (few slices, 64 px) with outputs checked against the library's
own slice-stack networks. The networks are left untrained (seeded initial weights): what is
tested is the timing, scoring and table code, not the models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dxkit.bench.exam_latency import (
    REFERENCE,
    BenchModels,
    LatencySetup,
    calibration,
    exam_inputs,
    latency,
    latency_exam,
)
from dxkit.bench.exam_paths import FINDINGS, PATH_NAMES, ExamForward, slice_loop
from dxkit.cli import main
from dxkit.data.exam import PLANES, IntensityNormalization
from dxkit.data.sources.mrnet import load_mrnet
from dxkit.data.synthetic_mrnet import write_mrnet_fixture
from dxkit.models.slicestack import ExamNetworks

TINY = LatencySetup(
    slices=2, size=64, train_size=64, n_train=8, n_valid=8, epochs=1, fixture_slices=(1, 2)
)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


def test_bench_exam_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(["bench", "exam", "--help"], capsys)
    assert code == 0 and "--part" in out and "--minutes" in out and "--repeats" in out


def test_bench_exam_unknown_part_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _cli(["bench", "exam", "--part", "speed", "--work", str(tmp_path)], capsys)
    assert code == 2 and "speed" in out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> BenchModels:
    """Untrained AlexNet exam models and MRNet-layout fixture exams (no training: fast)."""
    torch.set_num_threads(1)
    root = write_mrnet_fixture(
        tmp_path_factory.mktemp("mrnet"), n_train=8, n_valid=8, size=64, seed=0, slices=(1, 2)
    )
    torch.manual_seed(0)
    networks = {
        v: ExamNetworks("alexnet", PLANES, FINDINGS, variant=v).eval()
        for v in ("per_finding", "multitask")
    }
    norm = IntensityNormalization(mean=0.3, std=0.2)
    return BenchModels(
        networks, norm, list(load_mrnet(root, "train")), list(load_mrnet(root, "valid"))
    )


def test_paths_match_the_slicestack_networks(models: BenchModels) -> None:
    """The benchmark's batched graph and slice loop compute what ExamNetworks computes."""
    x = exam_inputs(latency_exam(3, TINY), models.normalization)
    for family, nets in models.networks.items():
        expected = torch.stack(
            [
                torch.cat(
                    [
                        nets.nets[k]([x[i].movedim(0, 1)])[0]
                        for k in ([p] if family == "multitask" else [f"{f}__{p}" for f in FINDINGS])
                    ]
                )
                for i, p in enumerate(PLANES)
            ]
        )
        with torch.no_grad():
            batched = ExamForward(nets).eval()(*x)
            looped = slice_loop(nets)(x)
        assert batched.shape == (3, 3)
        torch.testing.assert_close(batched, expected.detach(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(looped, expected.detach(), rtol=1e-4, atol=1e-4)


def test_calibration_is_every_training_exam_never_a_validation_one(models: BenchModels) -> None:
    """int8 calibration: all training exams (fit + tune), none of the scored exams."""
    split = dataclasses.replace(models, tune=models.tune[:2], train=models.tune)
    calib = calibration(split)
    assert len(calib) == len(models.tune) == 8
    valid = {e.exam_id for e in models.valid}
    for exam, planes in zip(models.tune, calib, strict=True):
        assert exam.exam_id not in valid
        expected = exam_inputs({p: exam.volume(p) for p in PLANES}, models.normalization)
        for got, want in zip(planes, expected, strict=True):
            torch.testing.assert_close(got, want)  # normalised exactly as at inference
    assert len(calibration(dataclasses.replace(split, train=None))) == 2  # fallback: tune


def test_latency_runs_on_a_tiny_exam(models: BenchModels, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    names = (PATH_NAMES[0], REFERENCE, "eager, batched, channels-last", PATH_NAMES[-1])
    body, rows = latency(
        tmp_path,
        repeats=2,
        threads=1,
        memory=False,
        results_path=results,
        setup=TINY,
        names=names,
        models=models,
    )
    assert {(r["model"], r["path"]) for r in rows} == {
        (m, n) for m in ("per_finding", "multitask") for n in names
    }
    for r in rows:
        assert r["ms"] > 0 and len(r["ms_all"]) == 2
        assert r["max_dp"] < 1e-3 if "int8" not in r["path"] else r["max_dp"] < 0.5
    dyn = [r for r in rows if "int8" in r["path"]]
    assert all(len(r["auc"]) == 3 and 0.0 <= r["d_auc"] <= 1.0 for r in dyn)
    text = results.read_text()
    assert "<!-- bench:exam -->" in text and "× slice loop" in body
    assert "target ≥ 3×" in body and "target ≥ 2.5×" in body

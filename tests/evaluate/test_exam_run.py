"""Exam-model evaluation: the paper-style numbers against scikit-learn and hand counts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dxkit.data.exam import PLANES, IntensityNormalization
from dxkit.data.sources.mrnet import load_mrnet
from dxkit.data.synthetic_mrnet import write_mrnet_fixture
from dxkit.errors import ConfigError
from dxkit.evaluate.exam_run import evaluate_checkpoint
from dxkit.infer.exam_model import FusionInputs, build_networks, load_exam_bundle
from dxkit.models.fusion import PlaneFusion
from dxkit.train.config import config_from_dict
from dxkit.train.exam_module import bundle_meta, model_meta, save_exam_bundle

FINDINGS = ["abnormal", "acl", "meniscus"]
THRESHOLDS = [0.45, 0.5, 0.55]
PER_PLANE = "Per-plane AUC beside the fused AUC (95% bootstrap CI over exams)"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two busy threads on two shared cores thrash
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained (seeded) exam model over a generated MRNet-layout folder."""
    tmp = tmp_path_factory.mktemp("exam_run")
    root = write_mrnet_fixture(tmp / "MRNet-v1.0", n_train=8, n_valid=14, size=16, slices=(3, 5))
    cfg = config_from_dict(
        {
            "name": "exam-eval",
            "task": "exam",
            "data": {"source": "mrnet", "path": str(root)},
            "preprocess": {"size": 16},
            "model": {
                "name": "smallresnet",
                "options": {"widths": [4, 8], "depths": [1, 1], "strides": [2, 2]},
            },
            "exam": {"variant": "multitask", "fusion_folds": 2},
            "evaluate": {"bootstrap": 300},
        }
    )
    torch.manual_seed(0)
    networks = build_networks(model_meta(cfg)).eval()
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.1, 0.9, (30, 3, 3))
    labels = (probs.mean(axis=1) > 0.5).astype(float)
    fusion = PlaneFusion(list(PLANES), FINDINGS).fit(probs, labels)
    meta = bundle_meta(
        cfg,
        normalization=IntensityNormalization(mean=0.4, std=0.25),
        fusion=fusion,
        fusion_inputs=FusionInputs("probability"),
        thresholds=THRESHOLDS,
        tuning={"exam_ids": ["0002", "0005", "0006"], "fit_exam_ids": [], "auc": [None] * 3},
        oof={"exam_ids": [str(i) for i in range(30)]},
    )
    return save_exam_bundle(tmp / "run" / "checkpoints" / "bundle.ckpt", meta, networks)


def _rates(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float, float]:
    called = p >= t
    tp, tn = int((called & (y == 1)).sum()), int((~called & (y == 0)).sum())
    return tp / int((y == 1).sum()), tn / int((y == 0).sum()), (tp + tn) / len(y)


def test_valid_report_matches_sklearn_and_hand_counts(bundle: Path) -> None:
    ev = evaluate_checkpoint(bundle)
    assert ev.split == "valid" and ev.report_html.is_file()
    model = load_exam_bundle(bundle)
    exams = list(load_mrnet(bundle.parents[2] / "MRNet-v1.0", "valid"))
    planes, fused = model.predict(exams)
    y = np.array([[e.labels[f] for f in FINDINGS] for e in exams])
    doc = json.loads(ev.report_json.read_text())
    metrics = doc["metrics"]
    assert metrics["n"] == 14 and metrics["bootstrap"]["n_units"] == 14
    assert metrics["bootstrap"]["unit"].startswith("group")  # exams are resampled
    assert doc["header"]["thresholds_chosen_on"].startswith("tuning set: 3 held-out")
    for j, (finding, entry) in enumerate(zip(FINDINGS, metrics["labels"], strict=True)):
        auc = roc_auc_score(y[:, j], fused[:, j])
        assert entry["auc"] == pytest.approx(auc)
        assert ev.scores[f"auc_{finding}"] == pytest.approx(auc)
        lo, hi = entry["auc_ci"]
        assert lo <= auc <= hi
        for key, t in (("0.5", 0.5), ("validation", THRESHOLDS[j])):
            table = entry["tables"][key]
            assert table["threshold"] == t
            sens, spec, acc = _rates(y[:, j], fused[:, j], t)
            assert (table["sensitivity"], table["specificity"], table["accuracy"]) == (
                pytest.approx(sens),
                pytest.approx(spec),
                pytest.approx(acc),
            )
        paper_row = doc["extra"]["MRNet paper-style table (fused exam probability)"][finding]
        assert paper_row["specificity at tuned threshold"] == pytest.approx(
            entry["tables"]["validation"]["specificity"]
        )
        for p, plane in enumerate(PLANES):
            ref = roc_auc_score(y[:, j], planes[:, p, j])
            assert ev.plane_aucs[finding][plane] == pytest.approx(ref)
            per_plane = doc["extra"][
                "Per-plane AUC beside the fused AUC (95% bootstrap CI over exams)"
            ]
            assert per_plane[finding][plane]["AUC"] == pytest.approx(ref)
        assert ev.plane_aucs[finding]["fused"] == pytest.approx(auc)
    assert "Per-plane AUC" in ev.report_html.read_text()


def test_tune_split_and_bundle_left_unchanged(bundle: Path, tmp_path: Path) -> None:
    before = hashlib.md5(bundle.read_bytes()).hexdigest()
    ev = evaluate_checkpoint(bundle.parents[1], split="val", out_dir=tmp_path)
    assert ev.split == "tune" and ev.payload["n"] == 3
    assert ev.report_json.parent == tmp_path
    assert hashlib.md5(bundle.read_bytes()).hexdigest() == before  # thresholds never rewritten


def test_unknown_split_is_a_config_error(bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"split 'holdout'.*'valid'"):
        evaluate_checkpoint(bundle, split="holdout")

"""The checkpoint contract: checkpoints in the layout today's dxkit writes (dicts spelled out
here key by key, as ``train/fit.py``, ``train/segment_fit.py`` and ``train/exam_module.py``
wrote them before the contract existed) still load and predict; a file that breaks the
contract is refused with the file, what was found and what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dxkit.data.exam import PLANES, Exam, IntensityNormalization, Series
from dxkit.errors import CheckpointError
from dxkit.infer.checkpoint import checkpoint_kind, load_checkpoint, update_metadata
from dxkit.infer.contract import ClassifierMetadata, ExamMetadata, SegmenterMetadata
from dxkit.infer.exam_model import build_networks, load_exam_bundle
from dxkit.infer.predictor import Predictor
from dxkit.infer.segment_model import load_segmenter
from dxkit.models.fusion import PlaneFusion
from dxkit.models.registry import create_model
from dxkit.models.segment import create_segmenter
from dxkit.preprocess.spec import Preprocessing

TINY = {"widths": [4, 8], "depths": [1, 1], "strides": [2, 2]}
FINDINGS = ["abnormal", "acl", "meniscus"]


def classifier_v1(path: Path) -> tuple[Path, torch.nn.Module]:
    """A classifier checkpoint in the ``dxkit-checkpoint/1`` layout of dxkit 0.1."""
    torch.manual_seed(0)
    model = create_model("smallresnet", 1, 1, 2, **TINY).eval()
    pre = Preprocessing(in_chans=1, size=32)
    meta = {
        "format": "dxkit-checkpoint/1",
        "kind": "classify",
        "dxkit_version": "0.1.0",
        "config": {"name": "old", "evaluate": {"tta": True}},
        "preprocessing": pre.model_dump(mode="json"),
        "label_names": ["finding"],
        "task": "binary",
        "dataset": "pneumoniamnist",
        "model": {"name": "smallresnet", "in_chans": 1, "num_classes": 1, "spatial_dims": 2,
                  "options": TINY},
        "thresholds": [0.4],
        "threshold_method": "youden",
        "inference": {"tta": True},
    }  # fmt: skip
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "dxkit": meta, "epoch": 0}, path)
    return path, model


def segmenter_v1(path: Path) -> Path:
    """A segmenter checkpoint in the ``dxkit-segment/1`` layout of dxkit 0.1."""
    torch.manual_seed(0)
    net = create_segmenter("unet", "resnet18", in_chans=1, num_classes=1, classifier=True)
    meta = {
        "format": "dxkit-segment/1",
        "kind": "segment",
        "dxkit_version": "0.1.0",
        "config": {"name": "old-seg"},
        "dataset": "siim",
        "task": "segment",
        "label_names": ["pneumothorax"],
        "preprocessing": {"size": 32, "scaling": "bits", "in_chans": 1},
        "model": {"architecture": "unet", "encoder": "resnet18", "in_chans": 1, "classes": 1,
                  "classifier": True},
        "decision": "both",
        "splits": {"train": ["a"], "val": ["b"], "test": []},
        "thresholds": {"threshold": 0.5, "min_area": 0, "min_area_at_size": 32,
                       "classifier": 0.5, "chosen_on": "validation split (1 images)",
                       "validation": {}, "preferred": "segmenter"},
    }  # fmt: skip
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "dxkit": meta}, path)
    return path


def exam_bundle_v1(path: Path) -> Path:
    """An exam bundle in the ``dxkit-exam-bundle/1`` layout of dxkit 0.1."""
    model = {"backbone": "smallresnet", "in_chans": 1, "pooling": "max", "variant": "multitask",
             "planes": list(PLANES), "findings": FINDINGS, "options": TINY}  # fmt: skip
    torch.manual_seed(0)
    networks = build_networks(model)
    rng = np.random.default_rng(0)
    fusion = PlaneFusion(list(PLANES), FINDINGS).fit(
        rng.uniform(0.2, 0.8, (20, 3, 3)), (np.arange(60).reshape(20, 3) % 2).astype(float)
    )
    meta = {
        "format": "dxkit-exam-bundle/1",
        "kind": "exam",
        "dxkit_version": "0.1.0",
        "config": {"name": "old-exam"},
        "dataset": "mrnet",
        "findings": FINDINGS,
        "planes": list(PLANES),
        "model": model,
        "networks": {},
        "normalization": {"scale": 255.0, "mean": [0.3], "std": [0.2]},
        "size": 16,
        "thresholds": [0.45, 0.5, 0.55],
        "threshold_method": "youden",
        "thresholds_from": "tuning set: 4 held-out MRNet train exams",
        "tuning": {"exam_ids": ["1"], "fit_exam_ids": ["2"]},
        "fusion": {"state": fusion.to_state(), "folds": 2, "inputs": {"kind": "probability"},
                   "exam_ids": [], "fold_of_exam": [], "oof_plane_probs": [], "labels": []},
    }  # fmt: skip
    states = {k: v.state_dict() for k, v in networks.nets.items()}
    torch.save({"dxkit": meta, "state_dicts": states}, path)
    return path


def test_old_classifier_checkpoint_loads_and_predicts(tmp_path: Path) -> None:
    path, model = classifier_v1(tmp_path / "old.ckpt")
    assert checkpoint_kind(path) == "classify"
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert predictor.thresholds == [0.4] and predictor.loaded.tta
    scans = np.random.default_rng(1).uniform(0, 255, (4, 1, 32, 32)).astype(np.float32)
    got = [p.probabilities["finding"] for p in predictor.predict_arrays(list(scans), list("abcd"))]
    x = torch.stack([predictor.prepare(s) for s in scans])
    with torch.no_grad():  # independent reference: the flip average by hand
        ref = (model(x).sigmoid() + model(x.flip(-1)).sigmoid())[:, 0] / 2
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-6)


def test_old_segmenter_and_exam_bundle_load(tmp_path: Path) -> None:
    seg = load_segmenter(segmenter_v1(tmp_path / "seg.ckpt"))
    maps, head = seg.predict([np.random.default_rng(0).uniform(0, 1, (40, 50))])
    assert maps.shape == (1, 32, 32) and head is not None and head.shape == (1,)
    bundle = load_exam_bundle(exam_bundle_v1(tmp_path / "bundle.ckpt"))
    assert bundle.thresholds == [0.45, 0.5, 0.55] and not bundle.tta
    rng = np.random.default_rng(2)
    volume = rng.integers(0, 255, (5, 16, 16)).astype(np.uint8)
    series = {p: Series(plane=p, data=volume) for p in PLANES}
    _, fused = bundle.predict([Exam("e1", series)])
    assert fused.shape == (1, 3) and np.isfinite(fused).all()


def test_the_writers_produce_what_the_readers_accept(tmp_path: Path) -> None:
    """The contract models read today's dicts back unchanged (the writers use them)."""
    path, _ = classifier_v1(tmp_path / "old.ckpt")
    meta = torch.load(path, weights_only=True)["dxkit"]
    assert ClassifierMetadata.model_validate(meta).dump() == meta
    seg = torch.load(segmenter_v1(tmp_path / "s.ckpt"), weights_only=True)["dxkit"]
    assert SegmenterMetadata.model_validate(seg).dump() == seg
    exam = torch.load(exam_bundle_v1(tmp_path / "e.ckpt"), weights_only=True)["dxkit"]
    assert ExamMetadata.model_validate(exam).dump().keys() >= exam.keys()


def test_unknown_format_names_file_found_version_and_fix(tmp_path: Path) -> None:
    path, _ = classifier_v1(tmp_path / "future.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["dxkit"] |= {"format": "dxkit-checkpoint/9", "dxkit_version": "9.0.0"}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "'dxkit-checkpoint/9'" in message
    assert "dxkit 9.0.0" in message and "retrain" in message


def test_broken_metadata_is_refused_before_loading_weights(tmp_path: Path) -> None:
    path, _ = classifier_v1(tmp_path / "broken.ckpt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["dxkit"]["label_names"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"broken\.ckpt.*'label_names'.*dxkit 0\.1\.0"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a classifier"):
        load_checkpoint(segmenter_v1(tmp_path / "seg.ckpt"))


def test_update_never_writes_a_file_readers_refuse(tmp_path: Path) -> None:
    path, _ = classifier_v1(tmp_path / "old.ckpt")
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="thresholds"):
        update_metadata(path, thresholds="high")
    assert path.read_bytes() == before
    update_metadata(path, thresholds=[0.3])
    assert load_checkpoint(path).thresholds == [0.3]


def test_intensity_normalisation_layout_is_the_bundles() -> None:
    norm = IntensityNormalization(scale=255.0, mean=0.3, std=0.2)
    assert norm.to_dict() == {"scale": 255.0, "mean": [0.3], "std": [0.2]}

"""dxkit.evaluate.metrics / calibration against scikit-learn, torchmetrics, MedMNIST's own
evaluator code and hand-computed examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, log_loss, recall_score, roc_auc_score
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_calibration_error,
    multiclass_accuracy,
    multiclass_auroc,
    multilabel_accuracy,
    multilabel_auroc,
)

from dxkit.errors import ConfigError, DataSourceError
from dxkit.evaluate.auc_intervals import _weighted_aucs
from dxkit.evaluate.calibration import expected_calibration_error, reliability_curve
from dxkit.evaluate.metrics import (
    auc_with_ci,
    binary_table,
    bootstrap_weights,
    choose_threshold,
    choose_thresholds,
    delong_ci,
    evaluate_predictions,
    medmnist_scores,
    rsna_weights,
    weighted_log_loss,
)


def _binary(n: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float64)
    p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    return y, p


# --- MedMNIST's Evaluator (medmnist/evaluator.py, v3), transcribed as the reference ------


def _medmnist_get_auc(y_true, y_score, task):
    y_true, y_score = y_true.squeeze(), y_score.squeeze()
    if task == "multi-label, binary-class":
        return np.mean(
            [roc_auc_score(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])]
        )
    if task == "binary-class":
        return roc_auc_score(y_true, y_score[:, -1] if y_score.ndim == 2 else y_score)
    return np.mean(
        [roc_auc_score((y_true == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1])]
    )


def _medmnist_get_acc(y_true, y_score, task, threshold=0.5):
    y_true, y_score = y_true.squeeze(), y_score.squeeze()
    if task == "multi-label, binary-class":
        y_pre = y_score > threshold
        return np.mean([np.mean(y_true[:, i] == y_pre[:, i]) for i in range(y_true.shape[1])])
    if task == "binary-class":
        y_score = y_score[:, -1] if y_score.ndim == 2 else y_score
        return np.mean(y_true == (y_score > threshold))
    return np.mean(y_true == np.argmax(y_score, axis=-1))


def test_medmnist_binary_matches_evaluator_sklearn_and_torchmetrics() -> None:
    y, p = _binary(500, 0)
    p[:5] = 0.5  # MedMNIST and torchmetrics call exactly 0.5 negative (p > 0.5)
    for probs in (p, p[:, None], np.stack([1 - p, p], axis=1)):
        got = medmnist_scores(y[:, None], probs, "binary")
        assert got["auc"] == pytest.approx(_medmnist_get_auc(y[:, None], probs, "binary-class"))
        assert got["acc"] == pytest.approx(_medmnist_get_acc(y[:, None], probs, "binary-class"))
    got = medmnist_scores(y, p, "binary")
    assert got["auc"] == pytest.approx(roc_auc_score(y, p))
    t_p, t_y = torch.from_numpy(p), torch.from_numpy(y).long()
    assert got["auc"] == pytest.approx(binary_auroc(t_p, t_y).item(), abs=1e-6)
    assert got["acc"] == pytest.approx(binary_accuracy(t_p, t_y, threshold=0.5).item(), abs=1e-6)
    assert medmnist_scores([1, 0], [0.5, 0.2], "binary")["acc"] == 0.5  # 0.5 is called negative
    assert math.isnan(medmnist_scores([1, 1], [0.2, 0.7], "binary")["auc"])


def test_medmnist_multiclass_one_hot_and_integer_labels() -> None:
    rng = np.random.default_rng(1)
    k, n = 4, 400
    labels = rng.integers(0, k, n)
    probs = softmax(rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels], axis=1)
    one_hot = np.eye(k)[labels]
    a = medmnist_scores(one_hot, probs, "multiclass")
    b = medmnist_scores(labels[:, None], probs, "multiclass")
    assert a == b
    assert a["auc"] == pytest.approx(_medmnist_get_auc(labels[:, None], probs, "multi-class"))
    assert a["acc"] == pytest.approx(_medmnist_get_acc(labels[:, None], probs, "multi-class"))
    assert a["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"))
    t_p, t_y = torch.from_numpy(probs), torch.from_numpy(labels)
    tm_auc = multiclass_auroc(t_p, t_y, num_classes=k, average="macro").item()
    assert a["auc"] == pytest.approx(tm_auc, abs=1e-6)
    tm_acc = multiclass_accuracy(t_p, t_y, num_classes=k, average="micro").item()
    assert a["acc"] == pytest.approx(tm_acc, abs=1e-6)


def test_medmnist_multilabel_per_label_average() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random((300, 5)) < 0.3).astype(np.float64)
    p = np.clip(0.3 * y + 0.7 * rng.random((300, 5)), 0, 1)
    got = medmnist_scores(y, p, "multilabel")
    assert got["auc"] == pytest.approx(_medmnist_get_auc(y, p, "multi-label, binary-class"))
    assert got["acc"] == pytest.approx(_medmnist_get_acc(y, p, "multi-label, binary-class"))
    assert got["auc"] == pytest.approx(roc_auc_score(y, p, average="macro"))
    t_p, t_y = torch.from_numpy(p), torch.from_numpy(y).long()
    assert got["auc"] == pytest.approx(multilabel_auroc(t_p, t_y, num_labels=5).item(), abs=1e-6)
    tm_acc = multilabel_accuracy(t_p, t_y, num_labels=5, threshold=0.5, average="macro").item()
    assert got["acc"] == pytest.approx(tm_acc, abs=1e-6)


def test_medmnist_bad_input_is_named() -> None:
    with pytest.raises(ConfigError, match="task must be one of"):
        medmnist_scores([0, 1], [0.1, 0.9], "regression")  # type: ignore[arg-type]
    with pytest.raises(DataSourceError, match="probabilities in"):
        medmnist_scores([0, 1], [0.1, 1.7], "binary")
    with pytest.raises(DataSourceError, match="same N"):
        medmnist_scores([0, 1, 1], [0.1, 0.7], "binary")


# --- thresholds and tables --------------------------------------------------------------


def _brute_force(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cuts = np.unique(p)
    sens = np.array([np.mean(p[y == 1] >= c) for c in cuts])
    spec = np.array([np.mean(p[y == 0] < c) for c in cuts])
    return cuts, sens, spec


def test_choose_threshold_youden_and_target_sensitivity_by_brute_force() -> None:
    y, p = _binary(300, 3)
    cuts, sens, spec = _brute_force(y, p)
    t = choose_threshold(y, p, "youden")
    j = sens + spec - 1
    assert j[np.searchsorted(cuts, t)] == pytest.approx(j.max())
    t90 = choose_threshold(y, p, "sensitivity", target=0.9)
    assert t90 == pytest.approx(cuts[sens >= 0.9].max())
    assert np.mean(p[y == 1] >= t90) >= 0.9
    # hand example: only 0.7 separates perfectly
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9]) == pytest.approx(0.7)
    assert choose_thresholds(np.stack([y, y], 1), np.stack([p, p], 1)) == [t, t]


def test_choose_threshold_single_class_falls_back_and_bad_method_raises() -> None:
    assert choose_threshold([0, 0, 0], [0.2, 0.4, 0.9]) == 0.5
    with pytest.raises(ConfigError, match="youden"):
        choose_threshold([0, 1], [0.2, 0.4], method="f1")  # type: ignore[arg-type]


def test_binary_table_hand_example_and_sklearn() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.4, 0.3, 0.2, 0.1, 0.6])
    t = binary_table(y, p, 0.6)  # p >= 0.6 positive: TP 3, FN 1, FP 2, TN 4
    assert (t["tp"], t["fn"], t["fp"], t["tn"]) == (3, 1, 2, 4)
    assert t["sensitivity"] == pytest.approx(0.75) == recall_score(y, p >= 0.6)
    assert t["specificity"] == pytest.approx(4 / 6)
    assert (t["ppv"], t["npv"], t["accuracy"]) == pytest.approx((3 / 5, 4 / 5, 7 / 10))
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.6).ravel()
    assert (tn, fp, fn, tp) == (t["tn"], t["fp"], t["fn"], t["tp"])
    # Wilson interval for 3/4 by its formula
    z, k, n = 1.959963984540054, 3, 4
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    assert t["sensitivity_ci"] == pytest.approx([centre - half, centre + half], abs=1e-9)


def test_binary_table_degenerate_cases_give_none_and_notes() -> None:
    t = binary_table([0, 0, 0], [0.1, 0.7, 0.2], 0.5)
    assert t["sensitivity"] is None and t["sensitivity_ci"] is None
    assert t["specificity"] == pytest.approx(2 / 3)
    assert any("sensitivity undefined: no positive cases" in n for n in t["notes"])
    t = binary_table([0, 1], [0.1, 0.2], 0.99)
    assert t["ppv"] is None and any("no case called positive" in n for n in t["notes"])
    json.dumps(t, allow_nan=False)


# --- AUC intervals ---------------------------------------------------------------------


def test_weighted_auc_matches_sklearn_sample_weight_with_ties() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200).astype(np.float64)
    p = np.round(rng.random(200), 1)  # many ties, within and across classes
    w = rng.integers(0, 4, (6, 200)).astype(np.float64)
    ours = _weighted_aucs(y, p, w)
    ref = [roc_auc_score(y, p, sample_weight=wi) for wi in w]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_auc_with_ci_point_estimate_and_determinism() -> None:
    y, p = _binary(400, 5)
    auc, lo, hi = auc_with_ci(y, p, n_boot=500, seed=1)
    assert auc == pytest.approx(roc_auc_score(y, p))
    assert lo < auc < hi and hi - lo < 0.2
    assert auc_with_ci(y, p, n_boot=500, seed=1) == (auc, lo, hi)
    assert auc_with_ci(y, p, n_boot=500, seed=2) != (auc, lo, hi)
    assert all(math.isnan(v) for v in auc_with_ci([1, 1, 1], [0.1, 0.5, 0.9]))


def test_cluster_bootstrap_resamples_patients_not_rows() -> None:
    # 40 patients x 15 images; every image of a patient carries the patient's score and
    # label, so the real information is 40 cases, not 600.
    rng = np.random.default_rng(6)
    patients = np.repeat(np.arange(40), 15)
    y_pat, p_pat = _binary(40, 7)
    y, p = y_pat[patients], p_pat[patients] + rng.normal(0, 1e-3, 600)
    p = np.clip(p, 0, 1)
    _, lo_r, hi_r = auc_with_ci(y, p, n_boot=400, seed=0)
    _, lo_g, hi_g = auc_with_ci(y, p, groups=patients, n_boot=400, seed=0)
    assert (hi_g - lo_g) > 2.5 * (hi_r - lo_r)  # ~sqrt(15) ≈ 3.9 times wider in theory
    block = next(bootstrap_weights(600, patients, 50, seed=0))
    per_patient = block.reshape(50, 40, 15)
    assert (per_patient == per_patient[:, :, :1]).all()  # a patient's rows move together
    assert (block.sum(axis=1) == 600).all()  # 40 patients drawn, 15 rows each
    # one group per row is exactly the row bootstrap
    assert auc_with_ci(y, p, groups=np.arange(600), n_boot=100) == auc_with_ci(y, p, n_boot=100)


def test_delong_matches_direct_kernel_and_agrees_with_bootstrap() -> None:
    y, p = _binary(60, 8)
    p = np.round(p, 1)  # ties exercise the mid-rank handling
    auc, lo, hi = delong_ci(y, p)
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = math.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)
    assert auc == pytest.approx(roc_auc_score(y, p)) == pytest.approx(psi.mean())
    assert (lo, hi) == pytest.approx((auc - 1.959963984540054 * se, auc + 1.959963984540054 * se))
    y, p = _binary(4000, 9)
    _, d_lo, d_hi = delong_ci(y, p)
    _, b_lo, b_hi = auc_with_ci(y, p, n_boot=1000, seed=0)
    assert d_lo == pytest.approx(b_lo, abs=0.005) and d_hi == pytest.approx(b_hi, abs=0.005)


# --- calibration and log loss -------------------------------------------------------------


def test_reliability_bins_match_sklearn_and_ece_matches_torchmetrics() -> None:
    y, p = _binary(1000, 10, signal=0.6)
    rel = reliability_curve(y, p, n_bins=15)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy="uniform")
    np.testing.assert_allclose(rel["fraction_positive"], prob_true)
    np.testing.assert_allclose(rel["mean_predicted"], prob_pred)
    assert sum(rel["count"]) == 1000
    ece = expected_calibration_error(y, p, n_bins=15)
    tm = binary_calibration_error(torch.from_numpy(p), torch.from_numpy(y).long(), n_bins=15)
    assert ece == pytest.approx(tm.item(), abs=1e-6)


def test_ece_hand_example() -> None:
    # bins [0, .5) and [.5, 1]: |0.5 - 0.1| * 2/4 + |1.0 - 0.9| * 2/4 = 0.25
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9], n_bins=2) == (
        pytest.approx(0.25)
    )
    with pytest.raises(ConfigError, match="n_bins"):
        expected_calibration_error([0, 1], [0.1, 0.9], n_bins=0)


def test_weighted_log_loss_hand_and_sklearn() -> None:
    names = ["epidural", "subdural", "any"]
    assert rsna_weights(names) == [1.0, 1.0, 2.0]
    y = np.array([[0, 1, 1], [0, 0, 0]])
    p = np.array([[0.2, 0.6, 0.9], [0.1, 0.3, 0.4]])
    row1 = -(math.log(0.8) + math.log(0.6) + 2 * math.log(0.9)) / 4
    row2 = -(math.log(0.9) + math.log(0.7) + 2 * math.log(0.6)) / 4
    assert weighted_log_loss(y, p, rsna_weights(names)) == pytest.approx((row1 + row2) / 2)
    rng = np.random.default_rng(11)
    y = (rng.random((200, 6)) < 0.2).astype(float)
    p = rng.uniform(0.01, 0.99, (200, 6))
    w = np.array([1, 1, 1, 1, 1, 2.0])
    ref = sum(w[i] * log_loss(y[:, i], p[:, i]) for i in range(6)) / w.sum()
    assert weighted_log_loss(y, p, w) == pytest.approx(ref)
    with pytest.raises(DataSourceError, match="one non-negative weight per label"):
        weighted_log_loss(y, p, [1, 2])


# --- the payload -----------------------------------------------------------------------


def test_evaluate_predictions_payload_matches_references_and_is_json() -> None:
    rng = np.random.default_rng(12)
    n = 300
    y = (rng.random((n, 3)) < [0.2, 0.4, 0.5]).astype(np.float32)
    y[:, 2] = 0  # a label with no positive case in this split
    p = np.clip(0.35 * y + 0.65 * rng.random((n, 3)), 0, 1)
    groups = np.array([f"PATIENT-{i // 3:04d}" for i in range(n)])
    out = evaluate_predictions(
        y,
        p,
        ["a", "b", "rare"],
        "multilabel",
        thresholds=[0.4, 0.5, 0.6],
        groups=groups,
        n_boot=200,
        seed=0,
    )
    text = json.dumps(out, allow_nan=False)
    assert "PATIENT-" not in text  # patient ids resample, never leak
    a, b, rare = out["labels"]
    assert a["auc"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert a["auc_ci"] == pytest.approx(
        list(auc_with_ci(y[:, 0], p[:, 0], groups=groups, n_boot=200, seed=0)[1:])
    )
    assert a["auc_ci_delong"] is None  # DeLong ignores clustering: not shown with groups
    assert a["tables"]["validation"] == binary_table(y[:, 0], p[:, 0], 0.4)
    assert b["tables"]["0.5"]["tp"] == int(((p[:, 1] >= 0.5) & (y[:, 1] == 1)).sum())
    assert a["roc"]["fpr"][0] == 0.0 and a["roc"]["tpr"][-1] == 1.0
    assert a["roc"]["thresholds"][0] is None  # sklearn's +inf becomes null
    assert a["calibration"]["ece"] == pytest.approx(expected_calibration_error(y[:, 0], p[:, 0]))
    assert rare["auc"] is None and rare["roc"] is None and rare["notes"]
    assert rare["tables"]["0.5"]["sensitivity"] is None
    assert out["overall"]["macro_auc"] == pytest.approx((a["auc"] + b["auc"]) / 2)
    lo, hi = out["overall"]["macro_auc_ci"]
    assert lo < out["overall"]["macro_auc"] < hi
    assert out["bootstrap"]["n_units"] == 100
    assert out["overall"]["medmnist"]["acc"] == pytest.approx(
        medmnist_scores(y, p, "multilabel")["acc"]
    )


def test_evaluate_predictions_multiclass_and_errors() -> None:
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 3, 150)
    probs = softmax(rng.normal(size=(150, 3)) + np.eye(3)[labels], axis=1)
    out = evaluate_predictions(np.eye(3)[labels], probs, ["x", "y", "z"], "multiclass", n_boot=50)
    assert out["overall"]["confusion_matrix"] == confusion_matrix(labels, probs.argmax(1)).tolist()
    assert out["overall"]["medmnist"]["auc"] == pytest.approx(out["overall"]["macro_auc"])
    assert out["labels"][0]["tables"]["validation"] is None
    assert out["labels"][0]["auc_ci_delong"] is not None
    with pytest.raises(ConfigError, match="2 thresholds for 3 labels"):
        evaluate_predictions(np.eye(3)[labels], probs, ["x", "y", "z"], "multiclass", [0.5, 0.5])
    with pytest.raises(DataSourceError, match="binary takes one column"):
        evaluate_predictions(np.eye(3)[labels], probs, ["x", "y", "z"], "binary")

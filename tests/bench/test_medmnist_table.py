"""The MedMNIST benchmark table states honestly which published rows were beaten."""

from dxkit.bench.medmnist import table


def _result(auc: float, acc: float, epochs_run: int) -> dict:
    return {
        "set": "breastmnist",
        "model": "smallresnet",
        "epochs": 60,
        "epochs_run": epochs_run,
        "max_minutes": 9,
        "auc": auc,
        "acc": acc,
        "val_auc": 0.9,
        "train_seconds": 120.0,
        "peak_mb": 900.0,
    }


def test_beats_only_rows_exceeded_on_both_auc_and_acc() -> None:
    # AUC beats ResNet-18 (0.901) but ACC ties it (0.863): a tie is not a win.
    text = table([_result(0.905, 0.863, 60)])
    assert "Beats on both AUC and ACC: ResNet-50 (28); falls short of: ResNet-18 (28)" in text
    assert "60 epochs." in text


def test_table_says_when_the_time_cap_cut_training_short() -> None:
    text = table([_result(0.91, 0.87, 23)])
    assert "23 of 60 planned epochs" in text
    assert "falls short of: best published" in text

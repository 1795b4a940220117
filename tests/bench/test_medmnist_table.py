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


def test_each_set_owns_its_section_so_one_set_reruns_alone(tmp_path, monkeypatch) -> None:
    import json
    import subprocess

    import dxkit.bench.medmnist as bench

    scores = iter([0.80, 0.85, 0.95])
    real_run = subprocess.run

    def fake_child(cmd, **kw):
        if "dxkit.bench.medmnist" not in cmd:  # e.g. platform.processor() calling uname
            return real_run(cmd, **kw)
        name = cmd[3].rsplit("/", 1)[-1].removesuffix(".yaml")
        out = {**_result(next(scores), 0.777, 60), "set": name}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(out) + "\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_child)
    results = tmp_path / "RESULTS.md"
    bench.run(tmp_path, sets=("breastmnist", "pneumoniamnist"), results_path=results)
    bench.run(tmp_path, sets=("breastmnist",), results_path=results)
    text = results.read_text()
    assert text.count("<!-- bench:medmnist-breastmnist -->") == 1
    assert "--sets pneumoniamnist" in text and "**0.850**" in text  # untouched by the rerun
    assert "**0.950**" in text and "**0.800**" not in text  # breast replaced by the rerun

"""`dxkit prepare dicom|rsna` through typer's CliRunner on the prepare app itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dxkit.cli.prepare import app
from dxkit.data.synthetic import generate_ct_dataset, write_defect
from dxkit.errors import ConfigError

runner = CliRunner()


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "dcm"
    generate_ct_dataset(root, 4, size=32, seed=5)
    return root


def test_dicom_table_and_strict(tree, tmp_path) -> None:
    out = tmp_path / "meta.parquet"
    result = runner.invoke(app, ["dicom", str(tree), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert len(table) == 4 and "PatientName" not in table.columns
    assert table["PatientID"].str.fullmatch(r"[0-9a-f]{16}").all()
    write_defect(tree / "bad.dcm", "not_dicom")
    result = runner.invoke(app, ["dicom", str(tree), "--out", str(out), "--strict"])
    assert result.exit_code == 1
    assert "1 unreadable" in result.output and "bad.dcm" in result.output
    assert "4 already done" in result.output
    lenient = runner.invoke(app, ["dicom", str(tree), "--out", str(tmp_path / "m2.parquet")])
    assert lenient.exit_code == 0


def test_dicom_table_holds_no_identity_unless_keep_phi(tree, tmp_path) -> None:
    import pydicom

    headers = [pydicom.dcmread(p) for p in sorted(tree.rglob("*.dcm"))]
    ids = {str(ds.PatientID) for ds in headers}
    names = {str(ds.PatientName) for ds in headers}
    out = tmp_path / "meta.parquet"
    result = runner.invoke(app, ["dicom", str(tree), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = pd.read_parquet(out).astype(str).to_csv()
    assert not [v for v in ids | names if v in text], "patient identity in the default table"
    key = tmp_path / "project.key"
    key.write_text("a-project-secret\n")
    keyed = tmp_path / "keyed.parquet"
    assert runner.invoke(app, ["dicom", str(tree), "-o", str(keyed), "--salt-file", str(key)]
                         ).exit_code == 0  # fmt: skip
    from dxkit.data.dicom_table import hash_id

    expected = sorted(hash_id(v, "a-project-secret") for v in ids)
    assert sorted(set(pd.read_parquet(keyed)["PatientID"])) == expected
    clear = tmp_path / "phi.parquet"
    result = runner.invoke(app, ["dicom", str(tree), "-o", str(clear), "--keep-phi"])
    assert result.exit_code == 0 and "patient identity" in result.output
    table = pd.read_parquet(clear)
    assert set(table["PatientID"]) == ids and set(table["PatientName"]) == names


def test_rsna_cache_with_labels_and_context(tree, tmp_path) -> None:
    labels = pd.read_csv(tree / "labels.csv")
    rows = []
    for path, lesion in zip(labels["path"], labels["lesion"], strict=True):
        for name in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid"):
            rows.append((f"{path[:-4]}_{name}", 0))
        rows += [(f"{path[:-4]}_subdural", lesion), (f"{path[:-4]}_any", lesion)]
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "cache"
    args = ["rsna", str(tree), "--out", str(out), "--labels", str(tmp_path / "train.csv")]
    args += ["--windows", "brain,subdural", "--size", "24", "--context"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 cached" in result.output and "4 slices labelled" in result.output
    index = pd.read_parquet(out / "index.parquet")
    assert (index["any"].to_numpy() == labels.set_index("path").loc[index["file"], "lesion"]).all()
    assert np.load(out / index["array"].iloc[0]).shape == (6, 24, 24)
    rerun = runner.invoke(app, args)
    assert "4 were already done" in rerun.output
    write_defect(tree / "cut.dcm", "truncated")
    strict = runner.invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1 and "cut.dcm" in strict.output


def test_bad_window_is_a_user_error(tree, tmp_path) -> None:
    result = runner.invoke(
        app, ["rsna", str(tree), "--out", str(tmp_path / "c"), "--windows", "brain,brian"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "brian" in str(result.exception)

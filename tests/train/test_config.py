"""Configs: YAML + overrides, strict validation, env expansion, resolved round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dxkit.errors import ConfigError, MissingFileError
from dxkit.train.config import RunConfig, apply_overrides, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_overrides_are_parsed_as_yaml_and_nested(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "train": {"epochs": 3}})
    cfg = load_config(
        path, ["train.epochs=7", "train.lr=0.01", "preprocess.windows=[brain, [50, 350]]"]
    )
    assert cfg.train.epochs == 7
    assert cfg.train.lr == pytest.approx(0.01)
    assert cfg.preprocess.windows == ["brain", (50.0, 350.0)]


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x", "train": {"epochs": 3, "epoch": 4}})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epoch'"):
        load_config(path)


def test_bad_value_names_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "x"})
    with pytest.raises(ConfigError, match=r"train\.epochs.*-1"):
        load_config(path, ["train.epochs=-1"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(path, ["train.epochs"])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_env_expansion_with_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DXKIT_TEST_ROOT", raising=False)
    cfg = config_from_dict({"name": "x", "data": {"path": "${DXKIT_TEST_ROOT:-/fallback}/m"}})
    assert cfg.data.path == Path("/fallback/m")
    monkeypatch.setenv("DXKIT_TEST_ROOT", "/real")
    cfg = config_from_dict({"name": "x", "data": {"path": "${DXKIT_TEST_ROOT:-/fallback}/m"}})
    assert cfg.data.path == Path("/real/m")


def test_resolved_yaml_round_trips() -> None:
    cfg = config_from_dict({"name": "x", "train": {"progressive_resize": [[0, 16], [3, 28]]}})
    again = RunConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_progressive_schedule_must_be_sorted() -> None:
    with pytest.raises(ConfigError, match="progressive_resize"):
        config_from_dict({"name": "x", "train": {"progressive_resize": [[3, 28], [0, 16]]}})


def test_override_into_non_section_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe: Path) -> None:
    cfg = load_config(recipe)
    assert cfg.name


def test_data_paths_are_saved_absolute_so_evaluate_works_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, {"name": "x", "data": {"path": "scans", "csv": "sub/labels.csv"}})
    cfg = load_config(path)
    assert cfg.data.path == tmp_path.resolve() / "scans"
    assert cfg.data.csv == tmp_path.resolve() / "sub" / "labels.csv"
    # The saved form (config.yaml / checkpoint metadata) reloads to the same place from /.
    monkeypatch.chdir("/")
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()), source="saved")
    assert again.data.path == tmp_path.resolve() / "scans"

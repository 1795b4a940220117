"""A commented YAML recipe that trains as written, for ``dxkit init``.

The values are CPU-sized starting points (a small ResNet, a size from the data's own
distribution); each line's comment says what to change on a GPU or for a real study. The
text is validated with ``config_from_dict`` before it is returned, so it always loads.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from dxkit.train.config import config_from_dict

SMALL_2D = {"widths": [16, 32, 64]}
SMALL_EXAM = {"widths": [8, 16], "depths": [1, 1], "strides": [2, 2]}
CT_WINDOWS = ["brain", "subdural", "bone"]

COMMENTS: dict[str, dict[str, str]] = {
    "name": {"name": "the run folder is runs/<name>"},
    "task": {"task": "classify | segment | exam (from the layout dxkit init found)"},
    "data": {
        "source": "how the scans are read (found by dxkit init)",
        "path": "the data folder (absolute; a relative path is read from where you run dxkit)",
        "csv": "the label file",
        "layout": "class_folders: root/[split/]class/... ; csv: a label CSV",
        "id_column": "the CSV column that names each scan",
        "path_pattern": "id → file under data.path, e.g. '{id}.png' or 'img/{id:03d}.png'",
        "val_fraction": "share held out for validation when the data has no split",
        "test_fraction": "share held out for the final report when the data has no split",
        "batch_size": "lower it if memory runs out",
    },
    "preprocess": {
        "size": "images are resized to size×size: the data's median side, capped (256 in 2-D)",
        "windows": "CT: Hounsfield windows stacked as channels",
    },
    "model": {
        "name": "smallresnet trains on a CPU; resnet18 / efficientnet_b0 on a GPU",
        "pretrained": "true downloads ImageNet weights (needs network); or a local file",
    },
    "train": {
        "epochs": "10 is a first look; 30-100 for a real result",
        "lr": "dxkit lr-find <this file> suggests one",
    },
    "evaluate": {"bootstrap": "resamples for the confidence intervals"},
}


def starter_recipe(
    name: str,
    task: str,
    data: dict[str, Any],
    spatial_dims: int = 2,
    size: int | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """The recipe as a dict (see ``starter_yaml``)."""
    recipe: dict[str, Any] = {"name": name, "task": task, "seed": 0}
    if task == "classify":
        split_given = data.get("source") == "medmnist"
        recipe["data"] = {**data, "batch_size": 32}
        if not split_given:
            recipe["data"].update(val_fraction=0.2, test_fraction=0.2)
        recipe["preprocess"] = {"size": size} if size else {}
        if modality == "CT":
            recipe["preprocess"]["windows"] = CT_WINDOWS
        recipe["model"] = {
            "name": "smallresnet",
            "pretrained": False,
            "options": SMALL_2D if spatial_dims == 2 else {"widths": [8, 16, 32]},
        }
        recipe["train"] = {"epochs": 10, "lr": 0.003, "schedule": "onecycle"}
    elif task == "exam":
        recipe["data"] = {**data, "batch_size": 4, "eval_batch_size": 8}
        recipe["preprocess"] = {"size": 64}
        recipe["model"] = {"name": "smallresnet", "options": SMALL_EXAM}
        recipe["exam"] = {"variant": "multitask", "pooling": "max", "fusion_folds": 2}
        recipe["train"] = {"epochs": 6, "lr": 0.01, "class_weights": "balanced"}
    elif task == "segment":
        recipe["data"] = {**data, "val_fraction": 0.2, "test_fraction": 0.2, "batch_size": 4}
        recipe["preprocess"] = {
            "size": 256 if (size or 256) >= 256 else 32 * max(1, (size or 32) // 32)
        }
        recipe["segment"] = {"encoder": "resnet18", "decision": "both"}
        recipe["train"] = {"epochs": 12, "lr": 0.001, "monitor": "val_dice"}
    else:
        raise ValueError(f"no starter recipe for task {task!r}")
    recipe["evaluate"] = {"bootstrap": 1000}
    return recipe


def starter_yaml(recipe: dict[str, Any], header: list[str]) -> str:
    """``recipe`` as YAML with ``header`` comment lines and a comment on the known keys."""
    config_from_dict(recipe, source="the generated config")  # it must load as written
    out = [f"# {line}" if line else "#" for line in header]
    for section, value in recipe.items():
        text = yaml.safe_dump({section: value}, sort_keys=False, allow_unicode=True)
        notes = COMMENTS.get(section, {})
        for line in text.rstrip("\n").splitlines():
            match = re.match(r"^(\s*)([A-Za-z_]+):", line)
            key = match.group(2) if match else None
            depth_ok = match is not None and (
                (len(match.group(1)) == 0 and key == section) or len(match.group(1)) == 2
            )
            note = notes.get(key) if depth_ok and key is not None else None
            out.append(f"{line}  # {note}" if note else line)
    return "\n".join(out) + "\n"

"""Resolve a run config's data section and preprocessing into concrete objects."""

from __future__ import annotations

import logging

import numpy as np
import torch

from dxkit.data.source import InputKind, SourceData
from dxkit.errors import ConfigError
from dxkit.preprocess.spec import CTRecipe, Preprocessing
from dxkit.train.config import PreprocessConfig, RunConfig

log = logging.getLogger(__name__)
DEFAULT_FOLDER_SIZE = 224


def load_source(cfg: RunConfig) -> SourceData:
    """The ``SourceData`` named by ``cfg.data``."""
    d = cfg.data
    if d.source == "medmnist":
        from dxkit.data.sources.medmnist import load_medmnist

        if d.name is None and d.path is None:
            raise ConfigError("data.name (e.g. breastmnist) or data.path (an .npz) is required")
        name = d.name or d.path.stem  # type: ignore[union-attr]
        path = d.path if d.path is not None and d.path.suffix == ".npz" else None
        root = d.path if d.path is not None and path is None else None
        return load_medmnist(name, root=root, size=d.size, path=path, download=d.download)
    if d.source == "folder":
        from dxkit.data.sources.folder import load_folder

        if d.path is None:
            raise ConfigError("data.path (the folder of scans) is required for source: folder")
        kind: InputKind = "hounsfield" if cfg.preprocess.windows else "uint8"
        return load_folder(
            d.path,
            csv=d.csv,
            val_fraction=d.val_fraction,
            test_fraction=d.test_fraction,
            seed=cfg.seed,
            input_kind=kind,
            layout=d.layout,
            id_column=d.id_column,
            path_pattern=d.path_pattern,
        )
    if d.source == "rsna":
        from dxkit.data.sources.rsna import load_rsna

        if d.path is None:
            raise ConfigError("data.path (the folder written by `dxkit prepare rsna`) is required")
        return load_rsna(
            d.path, val_fraction=d.val_fraction, seed=cfg.seed, test_fraction=d.test_fraction
        )
    raise ConfigError(f"data.source {d.source!r} is not supported")


def resolve_windows(spec: PreprocessConfig) -> tuple[list[tuple[float, float]], list[str]] | None:
    """Preset names or [center, width] pairs → numbers plus display names."""
    if not spec.windows:
        return None
    from dxkit.preprocess.window import WINDOWS

    values, names = [], []
    for w in spec.windows:
        if isinstance(w, str):
            if w not in WINDOWS:
                raise ConfigError(
                    f"preprocess.windows: unknown window {w!r}; presets are {sorted(WINDOWS)} "
                    "or give [center, width]"
                )
            values.append(tuple(float(v) for v in WINDOWS[w]))
            names.append(w)
        else:
            values.append((float(w[0]), float(w[1])))
            names.append(f"{w[0]:g}/{w[1]:g}")
    return values, names  # type: ignore[return-value]


def ct_recipe(cfg: RunConfig, source: SourceData) -> CTRecipe | None:
    """The head-CT cache recipe a source recorded (RSNA), checked against the config.

    The windows of a cache are fixed when it is prepared, so ``preprocess.windows`` in the
    recipe must name the same windows (or be left out); they are not applied a second time.
    """
    raw = source.extra.get("ct_recipe")
    if raw is None:
        return None
    recipe = CTRecipe.model_validate(raw)
    resolved = resolve_windows(cfg.preprocess)
    if resolved is not None and [tuple(w) for w in resolved[0]] != [
        tuple(w) for w in recipe.windows
    ]:
        raise ConfigError(
            f"preprocess.windows {resolved[1]} differ from the windows the cache at "
            f"{cfg.data.path} was prepared with {recipe.window_names or recipe.windows}; "
            "change the recipe or prepare the cache again with --windows"
        )
    return recipe


def build_preprocessing(cfg: RunConfig, source: SourceData) -> Preprocessing:
    """The preprocessing before dataset statistics (mean/std) are filled in."""
    ct = ct_recipe(cfg, source)
    if ct is not None:
        return Preprocessing(
            in_chans=ct.channels,
            size=cfg.preprocess.size or ct.size,
            input_kind="uint8",
            ct=ct,
            mean=[0.0] * ct.channels,
            std=[1.0] * ct.channels,
        )
    resolved = resolve_windows(cfg.preprocess)
    in_chans = len(resolved[0]) if resolved else source.in_chans
    size = cfg.preprocess.size or source.native_size
    if size is None:
        log.info("preprocess.size not set and scans have no common size: using %d", 224)
        size = DEFAULT_FOLDER_SIZE
    _log_input_choice(cfg, source, size)
    return Preprocessing(
        spatial_dims=source.spatial_dims,
        in_chans=in_chans,
        size=size,
        input_kind=source.input_kind,
        windows=resolved[0] if resolved else None,
        window_names=resolved[1] if resolved else None,
        mean=[0.0] * in_chans,
        std=[1.0] * in_chans,
    )


def _log_input_choice(cfg: RunConfig, source: SourceData, size: int) -> None:
    """Say which size and channels a folder run trains at, and why (``scan_survey`` rules)."""
    sides = source.extra.get("size_range")
    if not isinstance(sides, (tuple, list)):
        return
    lo, hi = sides
    spread = f"{lo}–{hi}" if lo != hi else f"{lo}"
    why = "preprocess.size" if cfg.preprocess.size else "median side, capped; set preprocess.size"
    log.info(
        "resizing %s px images to %d (%s); %s", spread, size, why, source.extra.get("channel_rule")
    )


def training_input_profile(
    source: SourceData, max_scans: int = 64, seed: int = 0
) -> dict[str, object]:
    """The input guard's profile of up to ``max_scans`` training scans as read (seeded).

    Empty for a prepared head-CT cache (``ct_recipe``): its model takes raw HU DICOMs and
    prepared uint8 slices alike, so the cached values say nothing about valid inputs."""
    from dxkit.data.dataset import read_item
    from dxkit.preprocess.input_profile import profile_inputs

    if source.extra.get("ct_recipe") is not None:
        return {}

    items = source.splits["train"].items
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(items), min(len(items), max_scans), replace=False)
    survey = source.extra.get("survey")
    modalities = getattr(survey, "modalities", None)
    modality = modalities.most_common(1)[0][0] if modalities else None
    return profile_inputs((read_item(items[int(i)])[0] for i in picks), modality, seed)


def class_weights(labels: np.ndarray, task: str) -> torch.Tensor:
    """Loss weights against class imbalance: BCE ``pos_weight`` = negatives/positives per
    label; cross-entropy weight = N / (K × count) per class."""
    y = np.asarray(labels, dtype=np.float64)
    if task == "multiclass":
        counts = y.sum(0).clip(min=1)
        return torch.tensor(len(y) / (y.shape[1] * counts), dtype=torch.float32)
    pos = y.sum(0).clip(min=1)
    neg = (len(y) - y.sum(0)).clip(min=1)
    return torch.tensor(neg / pos, dtype=torch.float32)

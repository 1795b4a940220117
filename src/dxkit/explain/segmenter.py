"""Heatmaps of segmenters: the model's own pixel probability map, on its absolute 0–1 scale.

A segmenter already says where it looks: its output is a probability per pixel. So no CAM
method is run; the map written is that probability map (at the model's input size, as
``.npy``) and the overlay shows it upsampled to the radiograph, never rescaled per image, so
two overlays can be compared by eye. The image-level score explained (and used by ``--check``)
is the checkpoint's own decision score: the mask path's k-th largest pixel probability, or
the classifier head's probability when validation preferred it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dxkit.errors import ConfigError
from dxkit.explain.faithfulness import Fill, deletion_check
from dxkit.explain.overlay import save_map, save_overlay
from dxkit.infer.device import ProgressCallback
from dxkit.io.discover import discover, readable

log = logging.getLogger(__name__)
METHOD = "probability"


def model_device(model: Any) -> torch.device:
    return next(model.model.parameters()).device


def _score_fn(model: Any, use_classifier: bool, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch ``(N, 1, S, S)`` → the decision score ``(N,)`` the checkpoint uses."""

    def score(batch: torch.Tensor) -> torch.Tensor:
        from dxkit.infer.segment_model import segment_probabilities

        with torch.no_grad():
            prob, head = segment_probabilities(
                model.model, batch.to(model_device(model)), model.tta
            )
            prob, head = prob.cpu(), None if head is None else head.cpu()
        if use_classifier and head is not None:
            return head[:, 0]
        flat = prob.flatten(1)
        return flat.topk(min(k, flat.shape[1]), dim=1).values[:, -1]

    return score


def explain_segmenter(
    path: Path,
    scans: Sequence[str | Path],
    out: Path,
    *,
    method: str,
    finding: str | None,
    layer: str | None,
    check: bool,
    fill: Fill,
    seed: int,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Probability-map overlays (and ``--check``) for each radiograph in ``scans``."""
    from dxkit.infer.segment_model import load_segmenter, mask_scores, to_input
    from dxkit.infer.segment_predict import image_call, read_image

    model = load_segmenter(path)
    labels = list(model.meta.get("label_names") or ["pneumothorax"])
    if finding is not None and finding not in labels:
        raise ConfigError(f"finding {finding!r} is not in this segmenter; it has: {labels}")
    if layer is not None or method not in ("gradcam", METHOD):
        raise ConfigError(
            f"segmenter heatmaps are the model's probability map; drop --layer/--method "
            f"(got method {method!r}, layer {layer!r}) or use --method {METHOD}"
        )
    th = model.thresholds
    min_area = int(th.get("min_area", 0))
    use_classifier = th.get("preferred") == "classifier" and model.has_classifier
    rows = []
    items, bad = discover(scans, "file")
    pairs = readable(items, lambda item: read_image(item.paths[0], model), bad)
    for i, (item, pixels) in enumerate(pairs):
        scan = item.paths[0]
        maps, cls = model.predict([pixels])
        prob = maps[0]
        classifier = float(cls[0]) if cls is not None else None
        score, _ = image_call(float(mask_scores(maps, min_area)[0]), classifier, th)
        stem = f"{scan.stem}.{labels[0]}.{METHOD}"
        up = F.interpolate(torch.from_numpy(prob)[None, None], size=pixels.shape, mode="bilinear")
        full = up[0, 0].numpy()
        peak = tuple(int(i) for i in np.unravel_index(int(np.argmax(full)), full.shape))
        caption = f"{labels[0]}  p={score:.3f}  pixel probability (0–1, not rescaled)"
        row: dict[str, Any] = {
            "source": str(scan),
            "finding": labels[0],
            "probability": score,
            "map_max": float(prob.max()),
            "area_above_threshold": int((prob > float(th["threshold"])).sum()),
            "peak": {"row": int(peak[0]), "column": int(peak[1])},
            "files": {
                "map": save_map(out / f"{stem}.npy", prob).name,
                "overlay": save_overlay(
                    out / f"{stem}.png", pixels, full, title=caption, marker=peak
                ).name,
            },
        }
        if check:
            x = to_input(pixels, model.size)
            k = max(min_area, 1)
            result = deletion_check(
                _score_fn(model, use_classifier, k), x, prob, fill=fill, seed=seed
            )
            row["faithfulness"] = result.as_dict()
        rows.append(row)
        if progress is not None:
            progress(i + 1, len(items))
        log.info("%s: %s p=%.3f", scan, labels[0], score)
    return {
        "failed": [{"source": b.source, "reason": b.reason} for b in bad],
        "model": f"{model.meta['model'].get('architecture', 'unet')}/"
        f"{model.meta['model'].get('encoder', '?')}",
        "task": "segment",
        "findings": labels,
        "method": METHOD,
        "layer": "output",
        "decision": "classifier head" if use_classifier else "mask (k-th largest probability)",
        "scale": "maps (.npy) are pixel probabilities at the model's input size; overlays "
        "show them on the absolute 0–1 scale",
        "scans": rows,
    }

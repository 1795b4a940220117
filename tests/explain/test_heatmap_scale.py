"""Heatmaps carry their scale (issue 16): on the planted-lesion model, a clear negative's
map stays under the colour bar's "relevant" mark, where scaling each map to its own
maximum drew it at full heat; a clear positive still reaches full heat. Overlays written
to files show the colour bar and say what 1 means."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dxkit.explain.overlay import RELEVANT, evidence_weight, save_overlay, scale_note


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_clear_negative_shows_no_hot_spot(planted: Any) -> None:
    from dxkit.serve.app import create_app

    client = TestClient(create_app([planted.checkpoint]), base_url="http://127.0.0.1")
    (model,) = client.get("/v1/models").json()["models"]
    threshold = next(iter(model["thresholds"].values()))

    def explain(i: int) -> dict:
        files = [("files", (f"test-{i}.png", png(planted.images[i]), "image/png"))]
        r = client.post("/v1/explain", data={"view": "true"}, files=files)
        assert r.status_code == 200, r.text
        return r.json()

    negatives, drawn = [], []
    for i in range(0, 40, 2):  # unlesioned phantoms
        body = explain(i)
        p = body["findings"][0]["probability"]
        heat = body["heatmap"]
        shown = np.frombuffer(base64.b64decode(heat["view"]["scan"]["data"]), np.uint8)
        if heat["raw_max"] > 0:  # an all-zero map (Grad-CAM found no evidence) draws nothing
            drawn.append((shown.max() / 255, heat["scale"]["weight"]))
        if p < threshold / 2 and heat["raw_max"] > 0:
            negatives.append((p, shown.max() / 255, heat))
    assert len(negatives) >= 5, "the planted model calls most unlesioned phantoms negative"
    for p, peak, heat in negatives:
        # Relative to its own maximum (the old display) this map peaked at 1.0.
        assert peak < RELEVANT, f"p={p:.3f} drawn up to {peak:.2f}"
        assert heat["scale"]["weight"] == pytest.approx(p / threshold, rel=1e-6)
        assert heat["scale"]["relevant"] == RELEVANT
        assert "threshold" in heat["scale"]["note"]
    # The map's maximum is drawn at exactly its weight (48 px: shown at full resolution).
    for peak, weight in drawn:
        assert peak == pytest.approx(weight, abs=1 / 255)
    lesion = explain(int(np.argmax(planted.labels)))["heatmap"]  # a lesioned phantom
    shown = np.frombuffer(base64.b64decode(lesion["view"]["scan"]["data"]), np.uint8)
    assert shown.max() / 255 == pytest.approx(lesion["scale"]["weight"], abs=1 / 255)


def test_overlay_files_carry_a_colour_bar(tmp_path) -> None:  # type: ignore[no-untyped-def]
    grey = np.full((32, 32), 0.5, np.float32)
    heat = np.zeros((32, 32), np.float32)
    heat[10:14, 10:14] = evidence_weight(0.1, 0.5)
    plain = Image.open(save_overlay(tmp_path / "a.png", grey, heat))
    note = scale_note(0.1, 0.5)
    assert note == "scale: 1 = this map's maximum × 0.20 (p 0.10 < threshold 0.50)"
    barred = Image.open(save_overlay(tmp_path / "b.png", grey, heat, scale=note))
    assert barred.width == plain.width and barred.height > plain.height
    strip = np.asarray(barred.convert("RGB"))[plain.height + 8, 6:-6]
    # The bar runs through the colour map: dark blue at 0 to dark red at 1 (jet).
    assert strip[0, 2] > strip[0, 0] and strip[-1, 0] > strip[-1, 2]
    assert evidence_weight(0.9, 0.5) == 1.0 and evidence_weight(0.2, 0.0) == 1.0

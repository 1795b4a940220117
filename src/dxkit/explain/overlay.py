"""Heatmaps as files: an overlay PNG per image, a montage PNG per series, raw maps as .npy.

Overlays are drawn with Pillow and a matplotlib colour map (no figure machinery, so the PNG
is pixel-aligned with the scan). The heat's opacity grows with its value, so cold regions
show the scan untouched. Small scans are enlarged (nearest neighbour for the scan's pixels,
bilinear for the smooth map) so a 28–64 px image is readable. A montage tiles the slices of
a series on ONE colour scale (the caller's ``vmax``), numbers every slice and frames the
deciding slice.

Every display map carries its scale (``scale_note`` and a colour bar, ``with_scale_bar``):
1 is the map's own maximum (a volume's slices share their volume's), and the map is drawn
at ``evidence_weight`` of that — probability / threshold, at most 1 — so a map reaches
full heat only for a positive call, and a clear negative (p below half its threshold)
never crosses the legend's ``RELEVANT`` mark, wherever its relative maximum happens to lie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from dxkit.errors import ConfigError

DECIDING_COLOUR = (0, 230, 118)  # a green that no "jet"/"inferno" value takes
TEXT_COLOUR = (255, 255, 255)
BACKGROUND = (18, 18, 18)
RELEVANT = 0.5  # the colour bar's "relevant" mark on the 0–1 display scale


def evidence_weight(probability: float, threshold: float) -> float:
    """How strongly a finding's map is drawn: ``probability / threshold``, in [0, 1]."""
    if not threshold > 0:
        return 1.0
    return float(min(1.0, max(0.0, probability / threshold)))


def scale_note(probability: float, threshold: float, reference: str = "map's maximum") -> str:
    """What 1 on the colour bar means for this map, in words."""
    weight = evidence_weight(probability, threshold)
    note = f"scale: 1 = this {reference}"
    if weight < 1:
        note += f" × {weight:.2f} (p {probability:.2f} < threshold {threshold:.2f})"
    return note


def with_scale_bar(image: Image.Image, note: str, cmap: str = "jet") -> Image.Image:
    """``image`` with a colour bar (0 → 1, the ``RELEVANT`` mark) and ``note`` underneath."""
    size = max(11, image.width // 30)
    bar_h, pad = max(8, size), 6
    canvas = Image.new("RGB", (image.width, image.height + bar_h + 2 * size + 3 * pad), BACKGROUND)
    canvas.paste(image, (0, 0))
    left, right = pad, image.width - pad
    ramp = colormaps[cmap](np.linspace(0.0, 1.0, max(2, right - left)))[:, :3]
    strip = np.repeat((255 * ramp[None]).astype(np.uint8), bar_h, axis=0)
    top = image.height + pad
    canvas.paste(Image.fromarray(strip), (left, top))
    draw = ImageDraw.Draw(canvas)
    font = _font(size)
    mark = left + RELEVANT * (right - left)
    draw.line([(mark, top - 2), (mark, top + bar_h + 2)], fill=TEXT_COLOUR, width=2)
    label_y = top + bar_h + 2
    draw.text((left, label_y), "0", fill=TEXT_COLOUR, font=font)
    draw.text((mark - 2 * size, label_y), "relevant", fill=TEXT_COLOUR, font=font)
    draw.text((right - size // 2, label_y), "1", fill=TEXT_COLOUR, font=font)
    draw.text((left, label_y + size + 2), note, fill=TEXT_COLOUR, font=font)
    return canvas


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def overlay_rgb(
    grey: np.ndarray, heat: np.ndarray, alpha: float = 0.6, cmap: str = "jet"
) -> np.ndarray:
    """Grey scan (0–1) with a 0–1 heatmap blended on top → uint8 RGB ``(H, W, 3)``."""
    grey = np.asarray(grey, dtype=np.float32)
    heat = np.asarray(heat, dtype=np.float32)
    if grey.shape != heat.shape or grey.ndim != 2:
        raise ConfigError(
            f"overlay needs a 2-D scan and a map of the same shape, got {grey.shape} and "
            f"{heat.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay alpha {alpha}; use a value between 0 and 1")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    colour = colormaps[cmap](heat)[..., :3].astype(np.float32)
    weight = (alpha * np.sqrt(heat))[..., None]  # faint evidence stays visible but light
    base = np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=2)
    return np.round(255 * ((1 - weight) * base + weight * colour)).astype(np.uint8)


def _enlarge(grey: np.ndarray, heat: np.ndarray, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = grey.shape
    factor = max(1, math.ceil(min_side / max(min(h, w), 1)))
    if factor == 1:
        return grey, heat
    size = (w * factor, h * factor)
    big_grey = np.asarray(
        Image.fromarray(grey.astype(np.float32), mode="F").resize(size, Image.Resampling.NEAREST)
    )
    big_heat = np.asarray(
        Image.fromarray(heat.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    )
    return big_grey, big_heat


def overlay_image(
    grey: np.ndarray,
    heat: np.ndarray,
    *,
    alpha: float = 0.6,
    cmap: str = "jet",
    min_side: int = 256,
    marker: Sequence[int] | None = None,
) -> Image.Image:
    """The overlay as a Pillow image, enlarged to at least ``min_side`` pixels; ``marker``
    (row, column on the scan's grid) draws a small cross, e.g. at the map's peak."""
    h = grey.shape[0]
    big_grey, big_heat = _enlarge(grey, heat, min_side)
    image = Image.fromarray(overlay_rgb(big_grey, big_heat, alpha, cmap))
    if marker is not None:
        scale = big_grey.shape[0] / h
        r, c = (marker[0] + 0.5) * scale, (marker[1] + 0.5) * scale
        arm = max(4.0, 0.02 * big_grey.shape[0])
        draw = ImageDraw.Draw(image)
        draw.line([(c - arm, r), (c + arm, r)], fill=TEXT_COLOUR, width=2)
        draw.line([(c, r - arm), (c, r + arm)], fill=TEXT_COLOUR, width=2)
    return image


def save_overlay(
    path: str | Path,
    grey: np.ndarray,
    heat: np.ndarray,
    *,
    title: str | None = None,
    marker: Sequence[int] | None = None,
    alpha: float = 0.6,
    cmap: str = "jet",
    min_side: int = 256,
    scale: str | None = None,
) -> Path:
    """Write one overlay PNG (with an optional caption strip underneath, and a colour bar
    with the ``scale`` note when given)."""
    image = overlay_image(grey, heat, alpha=alpha, cmap=cmap, min_side=min_side, marker=marker)
    if title:
        image = _with_caption(image, title)
    if scale:
        image = with_scale_bar(image, scale, cmap)
    return _save(image, path)


def _with_caption(image: Image.Image, text: str) -> Image.Image:
    size = max(12, image.width // 28)
    canvas = Image.new("RGB", (image.width, image.height + 2 * size), BACKGROUND)
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text(
        (6, image.height + size // 2), text, fill=TEXT_COLOUR, font=_font(size)
    )
    return canvas


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def save_montage(
    path: str | Path,
    greys: np.ndarray,
    heats: np.ndarray,
    *,
    deciding: int | None = None,
    deciding_label: str = "deciding slice",
    title: str | None = None,
    slice_notes: Sequence[str] | None = None,
    tile: int = 160,
    columns: int | None = None,
    alpha: float = 0.6,
    cmap: str = "jet",
    scale: str | None = None,
) -> Path:
    """Tile the slices ``(D, H, W)`` of a series with their maps (already on one 0–1 scale)
    into one PNG; the ``deciding`` slice gets a coloured frame and ``deciding_label``; a
    colour bar with the ``scale`` note when given."""
    greys, heats = np.asarray(greys), np.asarray(heats)
    if greys.ndim != 3 or greys.shape != heats.shape:
        raise ConfigError(
            f"montage needs slices (D, H, W) and maps of the same shape, got {greys.shape} "
            f"and {heats.shape}"
        )
    depth = greys.shape[0]
    if deciding is not None and not 0 <= deciding < depth:
        raise ConfigError(f"deciding slice {deciding} is outside the series' 0..{depth - 1}")
    columns = columns or min(depth, max(1, math.ceil(math.sqrt(depth * 16 / 9))))
    rows = math.ceil(depth / columns)
    h, w = greys.shape[1:]
    tile_h = max(1, round(tile * h / max(w, 1)))
    pad, font_size = 4, max(11, tile // 11)
    header = 2 * font_size + pad if title else 0
    canvas = Image.new(
        "RGB", (columns * (tile + pad) + pad, header + rows * (tile_h + pad) + pad), BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    font = _font(font_size)
    if title:
        draw.text((pad + 2, pad), title, fill=TEXT_COLOUR, font=font)
    for i in range(depth):
        image = overlay_image(greys[i], heats[i], alpha=alpha, cmap=cmap, min_side=1)
        image = image.resize((tile, tile_h), Image.Resampling.BILINEAR)
        x = pad + (i % columns) * (tile + pad)
        y = header + pad + (i // columns) * (tile_h + pad)
        canvas.paste(image, (x, y))
        note = f"{i}" + (f"  {slice_notes[i]}" if slice_notes is not None else "")
        draw.text((x + 3, y + 2), note, fill=TEXT_COLOUR, font=font)
        if i == deciding:
            frame = max(3, tile // 40)
            draw.rectangle(
                [x - 1, y - 1, x + tile, y + tile_h], outline=DECIDING_COLOUR, width=frame
            )
            draw.text(
                (x + 3, y + tile_h - font_size - 4), deciding_label, fill=DECIDING_COLOUR, font=font
            )
    return _save(with_scale_bar(canvas, scale, cmap) if scale else canvas, path)


def save_map(path: str | Path, raw: np.ndarray) -> Path:
    """The raw map (method units, not rescaled) as float32 ``.npy``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(raw, dtype=np.float32), allow_pickle=False)
    return path

"""The explorer page: one self-contained ``explore.html`` (inline CSS and PNG images, no
scripts, no external resources) and ``explore.json``, both made from the same summary, so
the JSON holds every number on the page and every figure is drawn from those numbers.

A patient overlap between splits, or identical images in several splits, opens the page in
a red box: it silently inflates every metric measured on the held-out split.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from dxkit.evaluate import html, plots
from dxkit.evaluate.explore import Exploration

_ALARM = (
    "background:#fde8e8;border:4px solid #cc0000;color:#a00000;padding:12px 18px;"
    "margin:14px 0;font-size:1.15em;font-weight:700"
)
_OK = "background:#e8f6ea;border:2px solid #2e7d32;color:#1b5e20;padding:8px 14px;margin:14px 0"
_INFO = "background:#f1f1f1;border:2px solid #999;color:#444;padding:8px 14px;margin:14px 0"
_CLASS_TASKS = ("binary", "multiclass")
_TILE_PX = 112  # montage tiles are shown at least this wide (small MedMNIST images upscaled)


def _box(style: str, title: str, lines: Sequence[str] = ()) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<div style="{style}">{escape(title)}{f"<ul>{items}</ul>" if items else ""}</div>'


def _n(count: int, noun: str) -> str:
    """``1 patient``, ``3 patients``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fig(fig: Figure, alt: str) -> str:
    return html.image(plots.data_uri(plots.figure_png(fig)), alt)


def leak_banners(summary: Mapping[str, Any]) -> str:
    """Red boxes for patient overlap and cross-split duplicates; green/grey when clean/unknown."""
    out = []
    pat, item = summary["patients"], summary["counts"]["item"]
    kind = pat.get("kind", "patient")
    if pat.get("checked"):
        ov = pat["overlap"]
        if ov["distinct"]:
            lines = [
                f"{' ∩ '.join(p['splits'])}: {_n(p['distinct'], kind)} ("
                + ", ".join(f"{_n(v, item)} in {k}" for k, v in p["entries"].items())
                + ")"
                for p in ov["pairs"]
            ]
            title = (
                f"⚠ {kind.upper()} OVERLAP BETWEEN SPLITS: {_n(ov['distinct'], kind)} "
                f"({_n(ov['entries'], item)}) in more than one split; held-out scores "
                f"will be optimistic. Re-split by {kind}."
            )
            out.append(_box(_ALARM, title, lines))
        else:
            n = len(pat["per_split"])
            text = f"No {kind} overlap between splits ({_n(pat['total'], kind)} in {n} splits)."
            out.append(_box(_OK, text))
    elif "per_split" in pat:
        out.append(_box(_INFO, f"Only one split: {kind} overlap between splits not checked."))
    else:
        out.append(_box(_INFO, f"No {kind} ids in this source: overlap between splits unknown."))
    dup = summary["duplicates"]
    if dup.get("checked") and dup["across_splits"]:
        lines = [f"{' ∩ '.join(p['splits'])}: {p['contents']}" for p in dup["pairs"]]
        title = (
            f"⚠ {_n(dup['across_splits'], item)} ({dup['by']}) in more than one split: "
            "the model is tested on images it was trained on."
        )
        out.append(_box(_ALARM, title, lines))
    return "".join(out)


def _counts(counts: Mapping[str, Any]) -> str:
    splits = counts["splits"]
    extra = [k for k in ("studies", "series") if any(k in s for s in splits.values())]
    head = ["", *splits]
    rows = [[f"{counts['item']}s", *(s["n"] for s in splits.values())]]
    rows += [[k, *(s.get(k) for s in splits.values())] for k in extra]
    out = html.table(head, rows)
    if counts["groups"]:
        head = ["label", *(f"{s} n" for s in splits), *(f"{s} share" for s in splits)]
        rows = [
            [
                g,
                *(s["labels"][g] for s in splits.values()),
                *(s["share"][g] for s in splits.values()),
            ]
            for g in counts["groups"]
        ]
        out += html.table(head, rows) + _fig(_count_figure(counts), "counts per split and label")
    return out


def _count_figure(counts: Mapping[str, Any]) -> Figure:
    groups, splits = counts["groups"], counts["splits"]
    fig = Figure(figsize=(min(14, 2 + 0.9 * len(groups) * len(splits) ** 0.5), 3.4))
    ax = fig.subplots()
    width = 0.8 / len(splits)
    for k, (name, entry) in enumerate(splits.items()):
        x = np.arange(len(groups)) + (k - (len(splits) - 1) / 2) * width
        ax.bar(x, [entry["labels"][g] for g in groups], width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0, ha="right")
    ax.set(ylabel=f"{counts['item']}s", title="Counts per split and label")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _patients(pat: Mapping[str, Any], item: str) -> str:
    if "per_split" not in pat:
        return "<p>No patient ids in this source.</p>"
    kind = pat["kind"]
    rows = [[s, v["distinct"], v["entries"]] for s, v in pat["per_split"].items()]
    if kind == item:  # MRNet: one exam per id, the two counts are the same thing
        rows = [r[:2] for r in rows]
    out = html.table(["split", f"{kind}s", f"{item}s"][: len(rows[0])], rows)
    ov = pat["overlap"]
    if ov["pairs"]:
        head = ["splits", f"shared {kind}s", f"their {item}s in first", f"their {item}s in second"]
        rows = [
            [" ∩ ".join(p["splits"]), p["distinct"], *p["entries"].values()] for p in ov["pairs"]
        ]
        out += html.table(head, rows)
        shown = ", ".join(ov["shared_ids"])
        out += (
            f"<p>Shared {kind} ids ({escape(ov['shared_ids_are'])}): "
            f"<code>{escape(shown)}</code></p>"
        )
    return out


def _duplicates(dup: Mapping[str, Any], item: str) -> str:
    if not dup.get("checked"):
        return "<p>Not checked for this source.</p>"
    rows = [
        ["repeated within a split", dup["within_splits"]],
        ["in more than one split", dup["across_splits"]],
        *([" ∩ ".join(p["splits"]), p["contents"]] for p in dup["pairs"]),
    ]
    return f"<p>Compared by {escape(dup['by'])}.</p>" + html.table([f"{item}s", "count"], rows)


def _cooccurrence(co: Mapping[str, Any]) -> str:
    names, matrix = co["labels"], np.asarray(co["matrix"])
    fig = Figure(figsize=(2.4 + 0.8 * len(names), 1.4 + 0.7 * len(names)))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            color="white" if v > matrix.max() / 2 else "black",
        )
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title("Positive together", fontsize=10)
    fig.tight_layout()
    table = html.table(
        ["", *names], [[n, *row] for n, row in zip(names, co["matrix"], strict=True)]
    )
    note = "<p>Cases positive for both findings; the diagonal counts each finding's positives.</p>"
    return f'{note}<div class="tables"><div>{table}</div>{_fig(fig, "label co-occurrence")}</div>'


def _slices(slices: Mapping[str, Any]) -> str:
    rows = [[p, s["series"], s["min"], s["median"], s["max"]] for p, s in slices.items()]
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    for plane, s in slices.items():
        x = np.array([int(k) for k in s["counts"]])
        ax.bar(x, list(s["counts"].values()), width=0.9, alpha=0.6, label=plane)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="slices per series", ylabel="series", title="Slices per series")
    ax.legend(fontsize=8)
    fig.tight_layout()
    table = html.table(["series kind", "series", "min", "median", "max"], rows)
    return table + _fig(fig, "slices per series")


def _intensity(inten: Mapping[str, Any]) -> str:
    edges = np.asarray(inten["edges"])
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    for group, g in inten["groups"].items():
        counts = np.asarray(g["counts"], dtype=float)
        total = counts.sum()
        ax.stairs(counts / total if total else counts, edges, label=group, lw=1.5)
    # log scale: CT air and padding peaks would otherwise flatten the tissue range
    ax.set_yscale("log")
    ax.set(
        xlabel=inten["unit"], ylabel="share of pixels in range (log)", title="Intensity histogram"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    head = [
        "label",
        "images",
        "pixels",
        "mean",
        "std",
        "p1",
        "median",
        "p99",
        f"below {edges[0]:g}",
        f"above {edges[-1]:g}",
    ]
    keys = ("images", "pixels", "mean", "std", "p1", "median", "p99", "below", "above")
    rows = [[name, *(g[k] for k in keys)] for name, g in inten["groups"].items()]
    return (
        f"<p>Unit: <b>{escape(inten['unit'])}</b>.</p>"
        + _fig(fig, "intensity histogram")
        + html.table(head, rows)
    )


def _metadata(meta: Mapping[str, Any]) -> str:
    cols = meta["columns"]
    cats = {c: v for c, v in cols.items() if v["kind"] == "categorical"}
    constant = {c: v for c, v in cats.items() if len(v["counts"]) == 1}
    varied = [
        f"<div><h3>{escape(c)}</h3>{html.table(['value', 'count'], v['counts'].items())}</div>"
        for c, v in cats.items()
        if c not in constant
    ]
    if constant:
        rows = [[c, *next(iter(v["counts"].items()))] for c, v in constant.items()]
        varied.insert(
            0, f"<div><h3>one value</h3>{html.table(['tag', 'value', 'count'], rows)}</div>"
        )
    nums = {c: v for c, v in cols.items() if v["kind"] == "numeric"}
    out = f'<p>From {escape(meta["from"])}.</p><div class="tables">{"".join(varied)}</div>'
    if nums:
        keys = ("n", "missing", "min", "median", "mean", "max")
        out += html.table(["column", *keys], [[c, *(v[k] for k in keys)] for c, v in nums.items()])
        n = len(nums)
        fig = Figure(figsize=(min(4 * n, 16), 2.8 * ((n + 3) // 4)))
        axes = np.atleast_1d(fig.subplots((n + 3) // 4, min(n, 4))).ravel()
        for ax, (c, v) in zip(axes, nums.items(), strict=False):
            ax.stairs(v["counts"], v["edges"], fill=True, alpha=0.7)
            ax.set_title(c, fontsize=9)
        for ax in axes[n:]:
            ax.set_visible(False)
        fig.tight_layout()
        out += _fig(fig, "numeric metadata histograms")
    if meta["skipped_free_text"]:
        out += html.notes(
            [f"not shown (mostly unique values): {', '.join(meta['skipped_free_text'])}"]
        )
    return out


def _tile_img(tile: np.ndarray, alt: str) -> str:
    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, format="PNG")
    h, w = tile.shape[:2]
    scale = max(1, _TILE_PX // max(1, min(h, w)))
    return (
        f'<img alt="{escape(alt)}" src="{plots.data_uri(buf.getvalue())}" width="{w * scale}" '
        f'height="{h * scale}" style="image-rendering:pixelated;margin:0">'
    )


def _montage(montage: Mapping[str, list[tuple[np.ndarray, str]]]) -> str:
    out = []
    for group, tiles in montage.items():
        figs = "".join(
            f'<figure style="margin:4px;text-align:center">{_tile_img(tile, f"{group} example")}'
            f"<figcaption>{escape(split)}</figcaption></figure>"
            for tile, split in tiles
        )
        out.append(f'<h3>{escape(group)}</h3><div style="display:flex;flex-wrap:wrap">{figs}</div>')
    return "".join(out)


def render_explorer(exploration: Exploration) -> str:
    """The explorer page as one HTML string."""
    s = exploration.summary
    src, counts = s["source"], s["counts"]
    header = {
        "kind": src["kind"],
        "source": src["path"],
        "task": src["task"] or "no labels",
        "labels": ", ".join(src["label_names"]) or None,
        "classes": ", ".join(src["class_names"]) if src["task"] in _CLASS_TASKS else None,
        f"{counts['item']}s": counts["total"],
        "splits": ", ".join(src["splits"]),
    }
    header = {k: v for k, v in header.items() if v is not None}
    body = [leak_banners(s), html.meta_list(header), "<h2>Counts</h2>", _counts(counts)]
    body += [
        f"<h2>{s['patients'].get('kind', 'patient').title()}s per split</h2>",
        _patients(s["patients"], counts["item"]),
    ]
    body += [
        "<h2>Identical images across splits</h2>",
        _duplicates(s["duplicates"], counts["item"]),
    ]
    if s["cooccurrence"]:
        body += ["<h2>Label co-occurrence</h2>", _cooccurrence(s["cooccurrence"])]
    if s["slices_per_series"]:
        body += ["<h2>Slices per series</h2>", _slices(s["slices_per_series"])]
    if s["intensity"]:
        body += ["<h2>Intensities (sampled)</h2>", _intensity(s["intensity"])]
    if s["metadata"]:
        body += ["<h2>Metadata</h2>", _metadata(s["metadata"])]
    if exploration.montage:
        body += ["<h2>Examples per label</h2>", _montage(exploration.montage)]
    samp, priv = s["sampling"], s["privacy"]
    privacy = [
        f"patient ids: {priv['ids']}",
        "example images are shown as stored: text burned into the pixels is not removed",
    ]
    if priv["refused_columns"]:
        privacy.append(f"identity columns refused: {', '.join(priv['refused_columns'])}")
    body += [
        "<h2>Sampling, privacy and notes</h2>",
        html.table(["setting", "value"], [[k, v] for k, v in samp.items()]),
        html.notes(privacy + s["notes"]),
    ]
    footer = (
        f"dxkit {escape(s['dxkit_version'])} · {escape(s['generated'])} · "
        "every number is in explore.json"
    )
    return html.page(s["title"], body, footer)


def write_explorer(exploration: Exploration, out: Path | str) -> tuple[Path, Path]:
    """Write ``explore.json`` and ``explore.html`` into ``out``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "explore.json", out / "explore.html"
    json_path.write_text(json.dumps(exploration.summary, indent=2, ensure_ascii=False) + "\n")
    html_path.write_text(render_explorer(exploration), encoding="utf-8")
    return json_path, html_path

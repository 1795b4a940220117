"""The report's figures, drawn only from the evaluation payload (so the JSON holds every
number a plot shows) and returned as PNG bytes for inlining into the HTML page.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never ``pyplot``:
no global state, no display needed, safe inside a server or a test run.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 80
_OPERATING_POINTS = (("validation", "validation threshold", "C3", "o"), ("0.5", "0.5", "C2", "s"))


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:`` URI that lets an ``<img>`` carry its PNG inside the page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _undefined(ax: Axes, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _rates_axes(
    ax: Axes,
    xlabel: str,
    ylabel: str,
    title: str,
    legend_at: Literal["lower right", "lower left", "upper left"],
) -> None:
    """Axes of two rates in [0, 1] (a little headroom above 1) with a small legend."""
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(loc=legend_at, fontsize=8)


def _count_grid(ax: Axes, counts: np.ndarray, **text: Any) -> None:
    """A confusion matrix as a blue grid with each cell's count written on it."""
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(1, int(counts.max())))
    for (i, j), v in np.ndenumerate(counts):
        dark = v > counts.max() / 2
        ax.text(j, i, f"{v}", ha="center", va="center", color="white" if dark else "black", **text)


def _operating_points(ax: Axes, tables: Mapping[str, Any], x_key: str, y_key: str) -> None:
    """Mark the tables' operating points (validation threshold, 0.5) on a curve."""
    for key, name, colour, marker in _OPERATING_POINTS:
        table = tables.get(key)
        if not table or table.get(x_key) is None or table.get(y_key) is None:
            continue
        x = 1 - table[x_key] if x_key == "specificity" else table[x_key]
        ax.plot(
            x,
            table[y_key],
            marker,
            color=colour,
            ms=8,
            label=f"p ≥ {table['threshold']:.3g} ({name})",
        )


def _roc(ax: Axes, entry: Mapping[str, Any]) -> None:
    roc = entry.get("roc")
    if not roc:
        _undefined(ax, "ROC", "undefined: one class only")
        return
    label = f"AUC {entry['auc']:.3f}"
    if entry.get("auc_ci"):
        label += f" ({entry['auc_ci'][0]:.3f}–{entry['auc_ci'][1]:.3f})"
    ax.plot(roc["fpr"], roc["tpr"], color="C0", lw=2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    _operating_points(ax, entry["tables"], "specificity", "sensitivity")
    _rates_axes(ax, "1 − specificity", "sensitivity", "ROC", "lower right")


def _pr(ax: Axes, entry: Mapping[str, Any]) -> None:
    pr = entry.get("pr")
    if not pr:
        _undefined(ax, "Precision–recall", "undefined: one class only")
        return
    ax.plot(
        pr["recall"], pr["precision"], color="C0", lw=2, label=f"AP {pr['average_precision']:.3f}"
    )
    if entry.get("prevalence") is not None:
        ax.axhline(
            entry["prevalence"],
            ls="--",
            color="0.6",
            lw=1,
            label=f"prevalence {entry['prevalence']:.3f}",
        )
    _operating_points(ax, entry["tables"], "sensitivity", "ppv")
    _rates_axes(ax, "recall (sensitivity)", "precision (PPV)", "Precision–recall", "lower left")


def _reliability(ax: Axes, entry: Mapping[str, Any]) -> None:
    cal = entry["calibration"]
    rel = cal["reliability"]
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    if rel["count"]:
        sizes = 20 + 180 * np.asarray(rel["count"]) / max(rel["count"])
        ax.plot(rel["mean_predicted"], rel["fraction_positive"], color="C0", lw=1.5)
        ax.scatter(
            rel["mean_predicted"],
            rel["fraction_positive"],
            s=sizes,
            color="C0",
            zorder=3,
            label="bins (area ∝ cases)",
        )
    ece = "n/a" if cal["ece"] is None else f"{cal['ece']:.3f}"
    title = f"Reliability (ECE {ece})"
    _rates_axes(ax, "mean predicted probability", "fraction positive", title, "upper left")


def _confusion(ax: Axes, entry: Mapping[str, Any]) -> None:
    tables = entry["tables"]
    key = "validation" if tables.get("validation") else "0.5"
    t = tables[key]
    counts = np.array([[t["tn"], t["fp"]], [t["fn"], t["tp"]]])
    _count_grid(ax, counts, fontsize=14)
    ax.set_xticks([0, 1], ["called negative", "called positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_ylabel("truth")
    ax.set_title(f"Confusion matrix at p ≥ {t['threshold']:.3g}")


def label_figure(entry: Mapping[str, Any]) -> bytes:
    """ROC, precision–recall, reliability and confusion matrix of one label, side by side."""
    fig = Figure(figsize=(17, 4.2))
    axes = fig.subplots(1, 4)
    _roc(axes[0], entry)
    _pr(axes[1], entry)
    _reliability(axes[2], entry)
    _confusion(axes[3], entry)
    # fixed margins instead of tight_layout: one draw instead of two per figure
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.14, top=0.92, wspace=0.28)
    return figure_png(fig)


def roc_overview(labels: Sequence[Mapping[str, Any]]) -> bytes:
    """Every label's ROC curve on one axes, for multi-label and multi-class reports."""
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for entry in labels:
        if entry.get("roc"):
            ax.plot(
                entry["roc"]["fpr"],
                entry["roc"]["tpr"],
                lw=1.5,
                label=f"{entry['name']} ({entry['auc']:.3f})",
            )
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    _rates_axes(ax, "1 − specificity", "sensitivity", "ROC per label (AUC)", "lower right")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.93)
    return figure_png(fig)


def class_confusion(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> bytes:
    """The K×K confusion matrix of a multi-class task (rows true, columns argmax)."""
    counts = np.asarray(matrix)
    k = counts.shape[0]
    fig = Figure(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k))
    ax = fig.subplots()
    _count_grid(ax, counts)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted (argmax)", ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    return figure_png(fig)

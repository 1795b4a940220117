"""The clinical evaluation report of a run: ``report.json`` (every number) and a
self-contained ``report.html`` (tables and inline figures) built from the same document.

``report.json`` is ``{"title", "header", "metrics", "extra"}``: ``metrics`` is the payload of
``dxkit.evaluate.metrics.evaluate_predictions``; ``extra`` holds workload sections (RSNA
weighted log loss, SIIM Dice...) as ``{section title: number | text | mapping | list}``.
Patient identifiers never enter it: header keys that name DICOM identity fields are dropped.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dxkit
from dxkit.errors import ConfigError
from dxkit.evaluate import html, plots
from dxkit.evaluate.metrics import json_safe

log = logging.getLogger(__name__)

_METRIC_KEYS = {"label_names", "bootstrap", "thresholds_from", "overall", "labels"}
_HEADER_FIRST = ("run", "model", "dataset", "split", "checkpoint", "task", "n")
_IDENTITY_KEYS = {
    "patientname",
    "patientid",
    "patientbirthdate",
    "birthdate",
    "patientaddress",
    "patientsaddress",
    "otherpatientids",
    "otherpatientnames",
    "patientmothersbirthname",
    "patienttelephonenumbers",
    "accessionnumber",
    "institutionaddress",
    "referringphysicianname",
}
_RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
_RATE_NAMES = {"ppv": "PPV", "npv": "NPV"}


def _header(payload: Mapping[str, Any], header: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run description shown at the top: scalar keys of the payload (model, split...),
    then ``header`` (overrides), then version and date; identity fields dropped."""
    items = {
        k: v
        for k, v in payload.items()
        if k not in _METRIC_KEYS and isinstance(v, str | int | float | bool)
    }
    items.update(header or {})
    safe = {}
    for key, value in items.items():
        if re.sub(r"[^a-z]", "", str(key).lower()) in _IDENTITY_KEYS:
            log.warning("report header: dropped %r, patient identity stays out of reports", key)
            continue
        safe[str(key)] = value
    ordered = {k: safe.pop(k) for k in _HEADER_FIRST if k in safe}
    ordered.update(safe)
    ordered["dxkit_version"] = dxkit.__version__
    ordered["generated"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return ordered


def build_document(
    payload: Mapping[str, Any],
    title: str,
    extra: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as one JSON-ready document (what both files are made from)."""
    if "labels" not in payload or "overall" not in payload:
        raise ConfigError(
            "write_report: payload lacks 'labels'/'overall'; pass the dict returned by "
            "dxkit.evaluate.metrics.evaluate_predictions"
        )
    return json_safe(
        {
            "title": title,
            "header": _header(payload, header),
            "metrics": dict(payload),
            "extra": dict(extra or {}),
        }
    )


# --------------------------------------------------------------------------- page sections


def _summary(m: Mapping[str, Any]) -> str:
    from dxkit.evaluate.verdicts import metric_family, undefined_reasons

    o, b = m["overall"], m["bootstrap"]
    family = metric_family(m)
    rows = [
        (f"{family}AUC (one-vs-rest, averaged over classes/labels)", o["medmnist"]["auc"], ""),
        (f"{family}ACC (p > 0.5, or argmax for multi-class)", o["medmnist"]["acc"], ""),
        ("Macro AUC over scored labels", o["macro_auc"], html.fmt_ci(o.get("macro_auc_ci"))),
    ]
    undefined = [f"AUC of {k} undefined: {v}" for k, v in undefined_reasons(m).items()]
    text = (
        f"<p>{html.fmt(m['n'])} cases, task {html.fmt(m['task'])}. Intervals: "
        f"{round(b['level'] * 100)}% percentile bootstrap, {html.fmt(b['n_boot'])} resamples of "
        f"{html.fmt(b['n_units'])} units (unit: {html.fmt(b['unit'])}), seed "
        f"{html.fmt(b['seed'])}. Thresholds: "
        f"{'chosen on validation' if m.get('thresholds_from') else 'none given (0.5 only)'}."
        "</p>"
    )
    return (
        "<h2>Summary</h2>"
        + text
        + html.table(["measure", "value", "95% CI"], rows)
        + html.notes(undefined)
    )


def _rates_key(entry: Mapping[str, Any]) -> str:
    return "validation" if entry["tables"].get("validation") else "0.5"


def _overview(m: Mapping[str, Any]) -> str:
    rows = []
    for e in m["labels"]:
        t = e["tables"][_rates_key(e)]
        ap = e["pr"]["average_precision"] if e.get("pr") else None
        rows.append(
            [
                e["name"],
                e["n"],
                e["n_positive"],
                e["prevalence"],
                e["auc"],
                html.fmt_ci(e.get("auc_ci")),
                ap,
                t["threshold"],
                *(t[r] for r in _RATES[:4]),
                e["calibration"]["ece"],
            ]
        )
    head = [
        "label",
        "cases",
        "positives",
        "prevalence",
        "AUC",
        "AUC 95% CI",
        "AP",
        "threshold",
        "sensitivity",
        "specificity",
        "PPV",
        "NPV",
        "ECE",
    ]
    note = (
        "<p>Rates at the validation threshold (p ≥ threshold is called positive); "
        "at 0.5 where no validation threshold was given.</p>"
    )
    return "<h2>Per label</h2>" + note + html.table(head, rows)


def _class_confusion(m: Mapping[str, Any]) -> str:
    matrix = m["overall"].get("confusion_matrix")
    if matrix is None:
        return ""
    names = m["label_names"]
    rows = [[f"true {n}", *row] for n, row in zip(names, matrix, strict=True)]
    png = plots.class_confusion(matrix, names)
    return (
        "<h2>Multi-class confusion matrix (argmax)</h2>"
        + html.table(["", *(f"predicted {n}" for n in names)], rows)
        + html.image(plots.data_uri(png), "multi-class confusion matrix")
    )


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix} / {k}" if prefix else str(k))
    else:
        yield prefix or "value", value


def _extra_section(title: str, content: Any) -> str:
    """A workload's own metrics (RSNA weighted log loss, SIIM Dice...) as a two-column table."""
    rows = []
    for key, value in _flatten(content):
        if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
            value = html.Num(", ".join(html.fmt(v) for v in value))
        elif isinstance(value, list | tuple):
            value = json.dumps(value)
        rows.append([key, value])
    return f"<h2>{html.fmt(title)}</h2>" + html.table(["measure", "value"], rows)


def _label_section(e: Mapping[str, Any], level: float) -> str:
    pct = f"{round(level * 100)}%"
    auc_rows = [
        ("AUC", e["auc"], ""),
        (
            f"AUC {pct} CI, bootstrap ({e['bootstrap_valid']} valid resamples)",
            "",
            html.fmt_ci(e.get("auc_ci")),
        ),
        (f"AUC {pct} CI, DeLong (independent cases)", "", html.fmt_ci(e.get("auc_ci_delong"))),
        ("average precision", e["pr"]["average_precision"] if e.get("pr") else None, ""),
        (
            f"expected calibration error ({e['calibration']['n_bins']} equal-width bins)",
            e["calibration"]["ece"],
            "",
        ),
        ("Brier score", e["calibration"]["brier"], ""),
    ]
    parts = [
        f"<h2>{html.fmt(e['name'])}</h2>",
        html.image(
            plots.data_uri(plots.label_figure(e)),
            f"ROC, precision-recall, reliability and confusion matrix of {e['name']}",
        ),
        '<div class="tables"><div><h3>Discrimination and calibration</h3>',
        html.table(["measure", "value", f"{pct} CI"], auc_rows),
        "</div>",
    ]
    for key, name in (("validation", "validation threshold"), ("0.5", "threshold 0.5")):
        t = e["tables"].get(key)
        if not t:
            continue
        rows = [(_RATE_NAMES.get(r, r), t[r], html.fmt_ci(t[f"{r}_ci"])) for r in _RATES]
        rows += [
            ("TP / FP", "", html.Num(f"{t['tp']} / {t['fp']}")),
            ("FN / TN", "", html.Num(f"{t['fn']} / {t['tn']}")),
        ]
        parts += [
            f"<div><h3>At {name}: p ≥ {html.fmt(t['threshold'])}</h3>",
            html.table(["measure", "value", f"{pct} CI (Wilson) / counts"], rows),
            html.notes(t["notes"]),
            "</div>",
        ]
    parts += ["</div>", html.notes(e["notes"])]
    return "".join(parts)


def render_html(doc: Mapping[str, Any]) -> str:
    """The self-contained page for a report document."""
    m = doc["metrics"]
    body = [html.meta_list(doc["header"]), _summary(m), _overview(m)]
    if m.get("selection_warning"):  # scored on a split a choice was made on: say it first
        body.insert(0, html.notes([m["selection_warning"]]))
    if len(m["labels"]) > 1:
        body.append(html.image(plots.data_uri(plots.roc_overview(m["labels"])), "ROC per label"))
    body.append(_class_confusion(m))
    body += [_extra_section(title, content) for title, content in doc["extra"].items()]
    body += [_label_section(e, m["bootstrap"]["level"]) for e in m["labels"]]
    footer = (
        "AUC intervals: percentile bootstrap over the resampling unit above (patients or exams "
        "when known, so a patient's images stay together); DeLong assumes independent cases and "
        "is shown only without groups. Rates: Wilson score intervals over cases. Calibration: "
        "equal-width bins. Every number on this page is in report.json beside it. "
        f"Generated by dxkit {html.fmt(doc['header']['dxkit_version'])}; "
        "contains no patient identifiers."
    )
    return html.page(doc["title"], body, footer)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_report(
    out_dir: Path,
    payload: dict,
    title: str,
    extra: dict | None = None,
    *,
    header: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``; return both paths.

    ``payload`` is ``evaluate_predictions``' result (scalar keys the caller added, such as
    ``model``, ``split``, ``dataset``, ``checkpoint``, appear in the header, as do
    ``header``'s items); ``extra`` adds workload sections, e.g.
    ``{"RSNA weighted log loss": {"value": 0.071, "weights": {"any": 2, ...}}}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = build_document(payload, title, extra, header)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    _write_atomic(json_path, json.dumps(doc, indent=1, allow_nan=False))
    _write_atomic(html_path, render_html(doc))
    log.info("report written to %s and %s", json_path, html_path)
    return json_path, html_path

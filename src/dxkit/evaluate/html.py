"""The report page as one self-contained HTML string: inline CSS, inline PNG figures, no
scripts and no external resources, so it opens from a file, an e-mail or an archive.

Every number in a ``<td class="num">`` comes from the report JSON, formatted by ``fmt``
(integers as is, other numbers to 3 decimals); the tests hold the page to that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px auto;
 max-width:1400px;color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:2px solid #ccc;padding-bottom:4px;
 margin-top:36px}h3{margin:16px 0 6px}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0 16px}
dl.meta dt{font-weight:600;color:#555}dl.meta dd{margin:0}
table{border-collapse:collapse;margin:6px 0 14px;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
.tables{display:flex;flex-wrap:wrap;gap:28px}.note{color:#8a4b00}
img{max-width:100%;height:auto;display:block;margin:8px 0}
footer{margin-top:40px;color:#666;font-size:0.88em}
"""


def fmt(value: Any) -> str:
    """How a number appears on the page: integers as is, floats to 3 decimals, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


class Num(str):
    """Already formatted numbers (an interval, a list, counts) that belong in a numeric cell."""

    __slots__ = ()


def fmt_ci(ci: Sequence[float | None] | None) -> str:
    """A confidence interval as ``lo – hi``."""
    if not ci or ci[0] is None or ci[1] is None:
        return "n/a"
    return Num(f"{fmt(ci[0])} – {fmt(ci[1])}")


def _cell(value: Any) -> str:
    if isinstance(value, Num):
        return f'<td class="num">{value}</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{fmt(value)}</td>'
    return f"<td>{fmt(value)}</td>"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; numbers and ``Num`` texts go in right-aligned ``num`` cells, other
    values are escaped text."""
    out = ["<table><thead><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(_cell(v) for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def meta_list(items: Mapping[str, Any]) -> str:
    """The header's key/value list (run, model, dataset, split, version, date...)."""
    rows = "".join(
        f"<dt>{escape(str(k).replace('_', ' '))}</dt><dd>{fmt(v)}</dd>" for k, v in items.items()
    )
    return f'<dl class="meta">{rows}</dl>'


def image(uri: str, alt: str) -> str:
    """An inline image."""
    return f'<img alt="{escape(alt)}" src="{uri}">'


def notes(items: Sequence[str]) -> str:
    """Warnings a reader must see next to the numbers they qualify."""
    if not items:
        return ""
    return "<ul>" + "".join(f'<li class="note">{escape(n)}</li>' for n in items) + "</ul>"


def page(title: str, body: Sequence[str], footer: str) -> str:
    """The whole document."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>{''.join(body)}<footer>{footer}</footer></body></html>\n"
    )

"""Inline HTML of an :class:`AnalysisResult` for notebooks (``_repr_html_``): notes, the
summary, the first rows of each table, the figures. Everything from data is escaped."""

from __future__ import annotations

import base64
import html
import io
import json

__all__ = ["figure_png", "PREVIEW_ROWS", "result_html", "SUMMARY_CHARS"]

PREVIEW_ROWS = 10
SUMMARY_CHARS = 3000


def figure_png(fig, dpi: int = 80) -> str:
    """A matplotlib figure as base64 PNG text."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def result_html(result, rows: int = PREVIEW_ROWS) -> str:
    """``result`` as a compact HTML block (tables cut to ``rows`` rows, with their size)."""
    e = html.escape
    out = [f"<div class='transferscope-result'><h4>{e(result.name)}</h4>"]
    out += [f"<p><i>{e(n)}</i></p>" for n in result.notes]
    text = json.dumps(result.summary, indent=1, default=str)
    if len(text) > SUMMARY_CHARS:
        text = text[:SUMMARY_CHARS] + "\n... (result.summary has the rest)"
    out.append(f"<details><summary>summary</summary><pre>{e(text)}</pre></details>")
    for key, df in result.tables.items():
        more = f", first {rows} shown" if len(df) > rows else ""
        out.append(f"<p><b>{e(str(key))}</b> ({len(df)} rows x {df.shape[1]} columns{more}; "
                   f"<code>result.tables[{e(repr(key))}]</code>)</p>")
        out.append(df.head(rows).to_html(index=False, escape=True, float_format="{:.3f}".format,
                                          na_rep="", border=0))
    for key, fig in result.figures.items():
        out.append(f"<p><b>{e(str(key))}</b></p><img alt='{e(str(key))}' "
                   f"src='data:image/png;base64,{figure_png(fig)}'>")
    if result.images:
        out.append(f"<p><i>{len(result.images)} thumbnails for the report's drill-downs</i></p>")
    return "".join(out) + "</div>"

"""One self-contained HTML report (figures embedded) from an audit's results.

Plain-words findings first, then one section per paper with its tables (next to the paper's
published numbers where they exist) and figures, then the exact study spec and versions.
"""

from __future__ import annotations

import base64
import html
import json
import platform
from pathlib import Path
from typing import Any

import pandas as pd

from transferscope import __version__
from transferscope._io import atomic_write_bytes
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import SECTIONS, finding_of, get_analysis, list_analyses



def sections(results=None) -> list[tuple[str, list[str]]]:
    """Report sections in page order, ``(heading, analysis names)``, read from the analysis
    registry; results of unregistered analyses go to a last "Other results" section."""
    out = [(heading, list_analyses(key)) for key, heading in SECTIONS.items()]
    known = {n for _, names in out for n in names}
    other = sorted(n for n in (results or {}) if n not in known)
    return out + ([("Other results", other)] if other else [])


def title_of(name: str) -> str:
    """The registered heading of an analysis (its name when it is not registered)."""
    return get_analysis(name).heading if name in list_analyses() else name


MAX_ROWS = 25

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #dde3ee;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em}.findings{background:#f4f7fc;border-left:4px solid #3566c9;padding:.6em 1.2em}
.findings li{margin:.35em 0}table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #d5dbe6;padding:3px 7px;text-align:right}th{background:#eef2f8}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #e3e7ef;margin:.4em 0}
.note{color:#5a6478;font-size:.85em}pre{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:.8em}
.meta{color:#5a6478}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def table_html(df: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in df.head(max_rows).itertuples(index=False))
    more = (f'<p class="note">first {max_rows} of {len(df)} rows; all rows in the CSV</p>'
            if len(df) > max_rows else "")
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def findings(results: dict[str, AnalysisResult]) -> list[str]:
    """Plain-words sentences, one per analysis with a registered finding, in report order."""
    order = [n for _, names in sections(results) for n in names]
    found = (finding_of(results[n]) for n in order if n in results)
    return [f.text for f in found if f is not None]


def load_results(out_dir: str | Path) -> dict[str, AnalysisResult]:
    """All analysis results saved under ``out_dir/results`` (for re-rendering a report)."""
    return {p.stem: AnalysisResult.load(p) for p in sorted(Path(out_dir, "results").glob("*.json"))
            if p.stem != "index"}


def write_report(out_dir: str | Path, results: dict[str, AnalysisResult], *,
                 title: str = "transferscope audit", spec_text: str | None = None,
                 extra_versions: dict[str, str] | None = None) -> Path:
    """Write ``out_dir/report.html`` from results already saved under ``out_dir``."""
    import torch

    out_dir = Path(out_dir)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
             f"{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    found = findings(results)
    if found:
        parts.append("<div class='findings'><h2>Findings</h2><ul>" +
                     "".join(f"<li>{f}</li>" for f in found) + "</ul></div>")
    for section, names in sections(results):
        present = [n for n in names if n in results]
        if not present:
            continue
        parts.append(f"<h2>{html.escape(section)}</h2>")
        for name in present:
            res = results[name]
            parts.append(f"<h3 id='{name}'>{html.escape(title_of(name))}</h3>")
            for note in res.notes:
                parts.append(f"<p class='note'>{html.escape(note)}</p>")
            for key, df in res.tables.items():
                parts.append(f"<p><b>{html.escape(key)}</b> "
                             f"<span class='note'>(results/{name}__{key}.csv)</span></p>")
                parts.append(table_html(df))
            for fig in sorted((out_dir / "figures").glob(f"{name}__*.png")):
                parts.append(_img(fig))
    versions = {"transferscope": __version__, "torch": torch.__version__,
                "python": platform.python_version(), **(extra_versions or {})}
    parts.append("<h2>Study and versions</h2><p class='meta'>" + ", ".join(
        f"{html.escape(k)} {html.escape(v)}" for k, v in versions.items()) + "</p>")
    if spec_text:
        parts.append(f"<pre>{html.escape(spec_text)}</pre>")
    index = out_dir / "results" / "index.json"
    if index.exists():
        parts.append(f"<pre>{html.escape(json.dumps(json.loads(index.read_text()), indent=1))}"
                     "</pre>")
    parts.append("<script>window.addEventListener('load',()=>{const i=[...document.images];"
                 "document.body.dataset.images=i.length;document.body.dataset.imagesLoaded="
                 "i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script></body></html>")
    path = out_dir / "report.html"
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path


class Report:
    """Notebook handle: ``Report.from_dir("out").write()`` re-renders ``out/report.html``."""

    def __init__(self, out_dir: str | Path, results: dict[str, AnalysisResult]):
        self.out_dir, self.results = Path(out_dir), results

    @classmethod
    def from_dir(cls, out_dir: str | Path) -> "Report":
        return cls(out_dir, load_results(out_dir))

    def findings(self) -> list[str]:
        return findings(self.results)

    def write(self, title: str = "transferscope audit", spec_text: str | None = None) -> Path:
        spec = self.out_dir / "study.toml"
        if spec_text is None and spec.exists():
            spec_text = spec.read_text()
        return write_report(self.out_dir, self.results, title=title, spec_text=spec_text)

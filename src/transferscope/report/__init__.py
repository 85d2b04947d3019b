"""One self-contained HTML report (figures embedded) from an audit's results.

Plain-words findings first, then one section per paper with its tables (next to the paper's
published numbers where they exist) and figures, then the exact study spec and versions. The
tables are explorable (sort, filter, CSV, a drill-down per source class): see
:mod:`transferscope.report.page`.
"""

from __future__ import annotations

import html
import json
import platform
from pathlib import Path

from transferscope import __version__
from transferscope._io import atomic_write_bytes
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import SECTIONS, finding_of, get_analysis, list_analyses
from transferscope.findings import Finding
from transferscope.report.findings import (SMOKE_BANNER, claims_html, collect_findings,
                                          findings_html, glossary_html, summary_html)
from transferscope.report.page import ReportPage

__all__ = ["AnalysisResult", "atomic_write_bytes", "claims_html", "collect_findings", "Finding",
           "finding_of", "findings", "findings_html", "get_analysis", "glossary_html",
           "list_analyses", "load_results", "Path", "Report", "ReportPage", "SECTIONS", "sections",
           "SMOKE_BANNER", "summary_html", "title_of", "write_findings", "write_report"]



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


def findings(results: dict[str, AnalysisResult]) -> list[Finding]:
    """The structured findings, one per analysis with a registered finding, in report order
    (``str(f)`` / ``f.text`` is the plain sentence)."""
    order = [n for _, names in sections(results) for n in names]
    found = (finding_of(results[n]) for n in order if n in results)
    return [f for f in found if f is not None]


def write_findings(out_dir: str | Path, items: list[Finding], ran: set[str]) -> Path:
    """``out_dir/results/findings.json``: every finding and the claims table."""
    from transferscope.findings import claims_table

    path = Path(out_dir, "results", "findings.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"findings": [f.to_dict() for f in items], "claims": claims_table(items, ran)}
    atomic_write_bytes(path, json.dumps(doc, indent=1, default=str).encode())
    return path


def load_results(out_dir: str | Path) -> dict[str, AnalysisResult]:
    """All analysis results saved under ``out_dir/results`` (for re-rendering a report)."""
    return {p.stem: AnalysisResult.load(p) for p in sorted(Path(out_dir, "results").glob("*.json"))
            if p.stem not in ("index", "findings")}


def write_report(out_dir: str | Path, results: dict[str, AnalysisResult], *,
                 title: str = "transferscope audit", spec_text: str | None = None,
                 extra_versions: dict[str, str] | None = None, smoke: bool | None = None) -> Path:
    """Write ``out_dir/report.html`` (and ``results/findings.json``) from results already
    saved under ``out_dir``. ``smoke`` (default: the spec says it is a ``--quick`` variant)
    puts a banner on top saying not to interpret the numbers."""
    import torch

    out_dir = Path(out_dir)
    page = ReportPage(results, out_dir)
    order = [n for _, names in sections(results) for n in names]
    found = collect_findings(results, findings, order)
    write_findings(out_dir, found, set(results))
    if smoke is None:
        smoke = bool(spec_text and spec_text.lstrip().startswith("# --quick variant"))
    parts = [page.head(title), f"<h1>{html.escape(title)}</h1>",
             SMOKE_BANNER if smoke else "", summary_html(found),
             claims_html(found, set(results)), findings_html(found)]
    for section, names in sections(results):
        present = [n for n in names if n in results]
        if not present:
            continue
        parts.append(f"<h2>{html.escape(section)}</h2>")
        for name in present:
            res = results[name]
            parts.append(f"<h3 id='{name}'>{html.escape(title_of(name))}</h3>")
            parts.append(page.notes(name, res))
            parts.extend(page.table(name, key, df) for key, df in res.tables.items())
            parts.append(page.figures(name))
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
    parts.append(glossary_html("\n".join([f.text for f in found] + [
        n for r in results.values() for n in r.notes])))
    parts.append(page.tail() + "</body></html>")
    path = out_dir / "report.html"
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path


class Report:
    """Notebook handle on an audit folder: shows inline, gives the findings as objects or text,
    ``Report.from_dir("out").write()`` re-renders ``out/report.html``.

    Example:
        >>> r = Report("out", {})
        >>> r.findings(), r.findings_text()
        ([], [])
    """

    def __init__(self, out_dir: str | Path, results: dict[str, AnalysisResult]):
        self.out_dir, self.results = Path(out_dir), results

    @classmethod
    def from_dir(cls, out_dir: str | Path) -> "Report":
        return cls(out_dir, load_results(out_dir))

    def findings(self) -> list[Finding]:
        """One :class:`~transferscope.findings.Finding` per finding: ``.analysis``, ``.text``
        (plain), ``.html``, ``.values`` (label, value, 95% interval or None), ``.checks``
        (the papers' claims it tests, with verdicts), ``.to_dict()``."""
        return collect_findings(self.results, findings,
                                [n for _, ns in sections(self.results) for n in ns])

    def claims(self) -> list[dict]:
        """The papers' claims with their verdicts on this study's data (one dict each)."""
        from transferscope.findings import claims_table

        return claims_table(self.findings(), set(self.results))

    def findings_text(self) -> list[str]:
        """The findings as plain sentences."""
        return [f.text for f in self.findings()]

    def __getitem__(self, name: str) -> AnalysisResult:
        return self.results[name]

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(title_of(n))}</td><td>"
            + html.escape(", ".join(f"{k} ({len(t)})" for k, t in r.tables.items()
                                    if k != "gallery")) + "</td></tr>"
            for n, r in self.results.items())
        page = self.out_dir / "report.html"
        return (f"<div class='transferscope-report'><p><b>transferscope audit</b> "
                f"<code>{html.escape(str(self.out_dir))}</code>: {len(self.results)} analyses; "
                + (f"full report <code>{html.escape(str(page))}</code>" if page.exists()
                   else "<code>.write()</code> renders the full report")
                + f"</p>{findings_html(self.findings())}<table><tr><th>result</th><th>what"
                f"</th><th>tables (rows)</th></tr>{rows}</table><p><i>report[name] shows one "
                "analysis</i></p></div>")

    def write(self, title: str = "transferscope audit", spec_text: str | None = None) -> Path:
        spec = self.out_dir / "study.toml"
        if spec_text is None and spec.exists():
            spec_text = spec.read_text()
        return write_report(self.out_dir, self.results, title=title, spec_text=spec_text)

"""One self-contained HTML report (figures embedded) from an audit's results.

Plain-words findings first, then one section per paper with its tables (next to the paper's
published numbers where they exist) and figures, then the exact study spec and versions. The
tables are explorable (sort, filter, CSV, a drill-down per source class): see
:mod:`transferscope.report_html`.
"""

from __future__ import annotations

import html
import json
import platform
from pathlib import Path
from typing import Any

from transferscope import __version__
from transferscope._io import atomic_write_bytes
from transferscope.analyses._base import AnalysisResult
from transferscope.report_findings import FindingView, collect_findings, findings_html
from transferscope.report_html import ReportPage

SECTIONS = [
    ("Source-domain memory and interference (papers 000 and 001)",
     ["retained_knowledge", "interference_bias", "agreement", "lingering_features",
      "composites", "occlusion", "distraction", "interference_detector"]),
    ("Transferability and domain statistics (paper 002)",
     ["transferability", "domain", "transferability_factors", "layer_gradients"]),
    ("What is being transferred (papers 003 and 004)",
     ["block_shuffle", "mistakes", "cka", "distances", "barriers", "basins", "criticality",
      "spectra", "pretraining_checkpoints"]),
]
TITLES = {
    "retained_knowledge": "Retained knowledge: source-class recall of M^st (paper 000, Table 1)",
    "interference_bias": "Interference bias of source classes (paper 000, eq. 1, Table 2)",
    "agreement": "Cross-model agreement (paper 000, Fig. 5, 6)",
    "lingering_features": "Source-only and lingering features (paper 001, eq. 1-3)",
    "composites": "Composite images (paper 000, Fig. 2; paper 001, section 4)",
    "occlusion": "Occluding the background (paper 001, Fig. 5)",
    "distraction": "Grad-CAM distraction (paper 001, eq. 4, Fig. 3a)",
    "interference_detector": "Interference detector (paper 001, eq. 5)",
    "transferability": "Layer-wise transferability T = D(theta_r, theta_B) / D(theta_A, theta_B) "
                       "(paper 002, eq. 1-2, Table 2, Fig. 8)",
    "domain": "Domain gap and width from colour and GLCM texture statistics (paper 002)",
    "transferability_factors": "Regression of log T on gap, width and log N (paper 002, eq. 3)",
    "layer_gradients": "Layer-wise gradients at the start of fine-tuning (paper 002, Fig. 9)",
    "block_shuffle": "Block-shuffled inputs: P-T vs RI-T (paper 003, section 3.1, Fig. 3)",
    "pretraining_checkpoints": "Fine-tuning from pre-training checkpoints (paper 003, section "
                               "3.5, Fig. 7)",
    "mistakes": "Common and uncommon mistakes (paper 003, section 3.2, Tables 3-6, Fig. 8)",
    "cka": "Feature similarity: linear CKA per module (paper 003, Table 1, 7)",
    "distances": "Parameter distances, l2 per module (paper 003, Table 2, 8)",
    "barriers": "Performance barriers on the line between solutions (paper 003, section 3.3)",
    "basins": "Basins of solutions (paper 003, Definition 3.1)",
    "criticality": "Module criticality (paper 003, Definition 3.2, Fig. 5, 6)",
    "spectra": "Conv-layer spectra via the 2-D FFT (paper 004, Appendix C)",
}
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def _first_set(summary: dict) -> dict[str, dict]:
    """Entries ``"<set>/<model>"`` of the first source-image set, keyed by model."""
    sets = list(dict.fromkeys(k.split("/", 1)[0] for k in summary))
    return {k.split("/", 1)[1]: v for k, v in summary.items() if sets and k.startswith(sets[0] + "/")}


def findings(results: dict[str, AnalysisResult]) -> list[str]:
    """Plain-words sentences drawn from the analyses' summaries (one per analysis)."""
    e, out = html.escape, []
    if "retained_knowledge" in results:
        s = _first_set(results["retained_knowledge"].summary)
        parts = [f"{e(k.replace(' + source head (M^st)', ''))} {v['classes_recall_ge_50']} of "
                 f"{v['classes']}" for k, v in s.items() if "M^st" in k]
        ref = [f"{e(k.replace('source ', '').replace(' (M^s)', ''))} itself: "
               f"{v['classes_recall_ge_50']}" for k, v in s.items() if "M^s)" in k][:1]
        if parts:
            out.append("<b>Retained knowledge</b>: with the source head put back, the fine-tuned "
                       "backbones still recognise source classes at recall &ge; 50%: "
                       + "; ".join(parts) + (f" ({ref[0]})." if ref else "."))
    if "interference_bias" in results:
        s = _first_set(results["interference_bias"].summary)
        parts = []
        for k, v in s.items():
            toward = ", ".join(f"{n} toward '{e(c)}'" for c, n in v["toward"].items())
            base = "/".join(f"{100 * r:.0f}%" for r in v.get("base_rate", {}).values())
            parts.append(f"{e(k)}: {v['strongly_biased']} ({toward}"
                         + (f"; base rate {base})" if base else ")"))
        out.append("<b>Interference bias</b>: source classes sending at least 80% of their "
                   "images to one target class - " + "; ".join(parts) + ".")
    if "composites" in results:
        parts = [f"{e(k)} {100 * v['clean']:.0f}% clean, {100 * v['neutral']:.0f}% neutral, "
                 f"{100 * v['against']:.0f}% against"
                 for k, v in results["composites"].summary["models"].items()
                 if "against" in v and "neutral" in v]
        out.append("<b>Composites</b>: accuracy on clean target images, on composites over "
                   "neutral backgrounds, and over backgrounds biased against the pasted class - "
                   + "; ".join(parts) + ".")
    if "occlusion" in results:
        parts = [f"{e(k)} {v['fixed']} of {v['wrong']}"
                 for k, v in results["occlusion"].summary.items() if v["wrong"]]
        out.append("<b>Occlusion</b>: wrong answers on composites that become right when the "
                   "background is hidden - " + "; ".join(parts) + ".")
    if "lingering_features" in results:
        s = results["lingering_features"].summary
        parts = [f"{e(k)} {m['lingering']} of {m['evaluated_source_only']}"
                 + (f" (e.g. {e(', '.join(t['name'] for t in m['top'][:3]))})" if m["top"] else "")
                 for k, m in s["models"].items()]
        out.append(f"<b>Lingering features</b> (p_lo = {s['p_lo']:g}): source-only classes "
                   "the fine-tuned backbone still recognises - " + "; ".join(parts) + ".")
    if "distraction" in results:
        parts = [f"{e(k)} {v['mean']:.2f}" for k, v in results["distraction"].summary.items()]
        out.append("<b>Grad-CAM distraction</b> (mean IoU with the source model's map on the "
                   "background): " + "; ".join(parts) + ".")
    if "interference_detector" in results:
        parts = [f"{e(k)} on {e(r['data'])}: AUROC {_fmt(r['auroc'])}, {r['flagged']}/"
                 f"{r['images']} flagged"
                 for k, v in results["interference_detector"].summary.items()
                 for r in v["by_data"] if v["lingering_classes"]]
        if parts:
            out.append("<b>Interference detector</b> (eq. 5) predicting the model's mistakes: "
                       + "; ".join(parts) + ".")
    if "transferability" in results:
        parts = [f"{e(k)} T_FB {_fmt(v['T_FB'])}, T_SB {_fmt(v['T_SB'])}"
                 for k, v in results["transferability"].summary.items()
                 if isinstance(v, dict) and "T_FB" in v]
        if parts:
            out.append("<b>Transferability</b> (1 = no better than a random start): "
                       + "; ".join(parts) + ".")
    if "barriers" in results:
        parts = [f"{e(k)} loss barrier {_fmt(v['loss_barrier'])}"
                 for k, v in results["barriers"].summary.items()]
        out.append("<b>Performance barriers</b> on the line between two solutions: "
                   + "; ".join(parts) + ".")
    if "remedies" in results:
        v = results["remedies"].summary.get("verdicts", {})
        def spread(r):
            sd = r.get("delta_against_std")
            return "" if sd is None or sd != sd else f" ± {100 * sd:.1f}"
        def verdict(r):
            sd = r.get("delta_against_std")
            worse = sd is not None and sd == sd and r["delta_against"] < -sd
            return "counts" if r["counts"] else "lowers interference but costs clean " \
                "accuracy" if r.get("lowers_interference") else "raises interference" \
                if worse else "does not count"
        parts = [f"{e(k)} {verdict(r)} "
                 f"(against {100 * r['delta_against']:+.1f}{spread(r)} pts, clean "
                 f"{100 * r['delta_clean']:+.1f} pts)" for k, r in v.items()]
        if parts:
            out.append("<b>Remedies</b> vs standard fine-tuning of the same seed (composite "
                       "accuracy over biased backgrounds; counts if its rise exceeds the "
                       "seed-to-seed spread of that rise and clean accuracy drops at most 1 "
                       "point): " + "; ".join(parts) + ".")
    return out


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
    page = ReportPage(results, out_dir)
    parts = [page.head(title), f"<h1>{html.escape(title)}</h1>",
             findings_html(collect_findings(results, findings,
                                            [n for _, names in SECTIONS for n in names]))]
    for section, names in SECTIONS:
        present = [n for n in names if n in results]
        if not present:
            continue
        parts.append(f"<h2>{html.escape(section)}</h2>")
        for name in present:
            res = results[name]
            parts.append(f"<h3 id='{name}'>{html.escape(TITLES.get(name, name))}</h3>")
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

    def findings(self) -> list[FindingView]:
        """One object per finding: ``.analysis``, ``.text`` (plain), ``.html``, ``.values``
        (label, value, 95% interval or None)."""
        return collect_findings(self.results, findings, [n for _, ns in SECTIONS for n in ns])

    def findings_text(self) -> list[str]:
        """The findings as plain sentences."""
        return [f.text for f in self.findings()]

    def __getitem__(self, name: str) -> AnalysisResult:
        return self.results[name]

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{html.escape(TITLES.get(n, n))}</td><td>"
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

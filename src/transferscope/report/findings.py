"""The report's findings: a "papers' claims on your data" table, then one entry per finding
(its lead, per-model clauses, caveat, next step, link to the evidence and the intervals with
unit and n), rendered from :class:`~transferscope.findings.Finding` objects as they are."""

from __future__ import annotations

import html
import re
from typing import Any, Callable

from transferscope import roles
from transferscope.findings import Finding, claims_table
from transferscope.report.page import with_class_names

__all__ = ["claims_html", "collect_findings", "findings_html", "FindingView", "GLOSSARY",
           "glossary_html", "SMOKE_BANNER", "summary_html"]

FindingView = Finding  # deprecated alias: findings are Finding objects now


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))


def collect_findings(results: dict, findings_fn: Callable[[dict], list],
                     order: list[str] | None = None) -> list[Finding]:
    """The findings of every analysis (in ``order``, then the rest)."""
    rank = {n: i for i, n in enumerate(order or [])}
    names = sorted(results, key=lambda n: rank.get(n, len(rank)))
    return [f if f.analysis else f.with_analysis(name)
            for name in names for f in findings_fn({name: results[name]})]


_VERDICT_CLASS = {"agrees": "agrees", "contradicts": "contradicts", "cannot tell": "unclear",
                  "not tested": "untested"}


def claims_html(items: list[Finding], ran: set[str] | None = None) -> str:
    """The table of every paper claim with its verdict on this study's data."""
    rows = claims_table(items, ran)
    if not any(r["verdict"] != "not tested" for r in rows) and not items:
        return ""
    e = html.escape
    trs = "".join(
        f"<tr class='{_VERDICT_CLASS[r['verdict']]}'><td>{e(r['paper'])}</td><td>{e(r['words'])}"
        f"</td><td><b>{e(r['verdict'])}</b></td><td>{e(r['why'])}"
        + (f"<br><span class='ci'>{e(r['estimate'])}; {e(r['test'])}</span>" if r['estimate']
           else "") + f"</td><td><a href='#{e(r['analysis'])}'>{e(r['analysis'])}</a></td></tr>"
        for r in rows)
    return ("<section class='claims' id='claims'><h2>The papers' claims on your data</h2>"
            "<p class='note'>Each claim is tested on this study's runs: <i>agrees</i> / "
            "<i>contradicts</i> when the 95 % interval (over the unit named) lies on one side, "
            "<i>cannot tell</i> when it does not or the setting is too small. With one or two "
            "seeds a verdict is about these runs, not about training in general.</p>"
            "<table class='claims'><tr><th>paper</th><th>claim</th><th>verdict</th><th>why"
            f"</th><th>evidence</th></tr>{trs}</table></section>")


def findings_html(items: list[Finding], max_values: int = 6) -> str:
    """The findings list: one entry each, a link to its evidence, its intervals."""
    if not items:
        return ""
    e = html.escape
    lis = []
    for f in items:
        ci = [f"<span class='ci'>{e(label)} {_num(v)}"
              + (f" [{_num(iv[0])}, {_num(iv[1])}]" if iv else "") + "</span>"
              for label, v, iv in f.values[:max_values]]
        units = sorted({f"{iv.n} {iv.unit}" for _, iv in f.estimates})
        if units:
            ci.append(f"<span class='ci'>over {e(', '.join(units))}</span>")
        more = f"<span class='ci'>+{len(f.values) - max_values} more</span>" \
            if len(f.values) > max_values else ""
        link = f" <a class='evidence' href='#{e(f.analysis)}'>evidence</a>" \
            if f.analysis else ""
        parts = "".join(f"<li>{with_class_names(p, for_html=True)}</li>" for p in f.parts)
        extra = (f"<div class='caveat'>Caution: {e(f.caveat)}</div>" if f.caveat else "") + \
            "".join(f"<div class='check {_VERDICT_CLASS[c.verdict.value]}'>{e(c.about.paper)}"
                    f": {e(c.verdict.words)} - {e(c.why)}</div>" for c in f.checks) + \
            (f"<div class='next'>Next step: {e(f.next_step)}</div>" if f.next_step else "")
        lis.append(f"<li>{with_class_names(f.html, for_html=True)}{':' if parts else ''}{link}"
                   + (f"<ul class='parts'>{parts}</ul>" if parts else "") + extra
                   + (f"<div class='cis'>{''.join(ci)}{more}</div>" if ci else "") + "</li>")
    note = "<p class='note'>Numbers with their 95% intervals in brackets.</p>" \
        if any(f.values for f in items) else ""
    return (f"<section class='findings' id='findings'><h2>Findings</h2>{note}"
            f"<ol>{''.join(lis)}</ol></section>")


# Every symbol and abbreviation the report uses, in plain words (shown when it appears).
GLOSSARY: dict[str, str] = {
    "M^s": "the source model: the pretrained network with its original (source) head",
    "M^st": "the fine-tuned backbone with the source head put back (paper 001): what the "
            "fine-tuned model still knows of the source classes",
    "M^t": "the fine-tuned model with its target head",
    **roles.GLOSSARY,
    "L": "the lingering set: source classes whose features survive fine-tuning (paper 001)",
    "T_FB": "transferability of a layer, fine-tuned vs from scratch (paper 002, eq. 1)",
    "T_SB": "transferability of a layer, pretrained start vs from scratch (paper 002)",
    "p_lo": "the lowest mean source-class probability that still counts a class as lingering",
    "k": "how many top lingering classes an image must activate to be flagged",
    "MMD²": "maximum mean discrepancy: the domain gap between two sets' feature distributions",
    "MMD^2": "maximum mean discrepancy: the domain gap between two sets' feature distributions",
    "CKA": "centred kernel alignment: similarity of two models' features (1 = same)",
    "ε": "epsilon: the loss tolerance of a basin (paper 003, Def. 3.1)",
    "δ": "delta: how far one can move from the solutions' hull and stay in the basin",
    "AUROC": "area under the ROC curve: 0.5 = no better than chance, 1 = perfect ranking",
    "IoU": "intersection over union of two masks",
    "95 %": "the 95 % interval: the range the value lies in with 95 % confidence, resampling "
            "the unit named (class, background image, target image, seed)",
}


def summary_html(items: list[Finding], most: int = 3) -> str:
    """"What this means for your model": the findings that matter most (those with a next
    step, then those whose claim has a clear verdict), each with its verdict and next step."""
    def weight(f: Finding) -> tuple:
        clear = any(c.verdict.value in ("agrees", "contradicts") for c in f.checks)
        return (not f.next_step, not clear, f.too_small)

    chosen = sorted(items, key=weight)[:most]
    if not chosen:
        return ""
    e = html.escape
    lis = []
    for f in chosen:
        verdicts = "; ".join(f"{c.about.words}: {c.verdict.words}" for c in f.checks)
        lis.append(f"<li><b>{e(f.title)}</b>: {e(f.lead)}"
                   + (f" <i>({e(verdicts)})</i>" if verdicts else "")
                   + (f" <b>Caution</b>: {e(f.caveat)}." if f.caveat else "")
                   + (f"<br>What to do: {e(f.next_step)}" if f.next_step else "")
                   + (f" <a href='#{e(f.analysis)}'>evidence</a>" if f.analysis else "")
                   + "</li>")
    return ("<section class='summary' id='summary'><h2>What this means for your model</h2>"
            f"<ul>{''.join(lis)}</ul></section>")


def glossary_html(page_text: str) -> str:
    """The glossary entries whose term appears in ``page_text``."""
    e = html.escape
    used = [(k, v) for k, v in GLOSSARY.items()
            if re.search(rf"(?<![\w^]){re.escape(k)}(?![\w^])", page_text)]
    seen, rows = set(), []
    for k, v in used:
        if v in seen:
            continue
        seen.add(v)
        rows.append(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>")
    return (f"<section class='glossary' id='glossary'><h2>Glossary</h2><dl>{''.join(rows)}"
            "</dl></section>") if rows else ""


SMOKE_BANNER = ("<div class='banner smoke'><b>Smoke-test run</b> (--quick): tiny images, few "
                "epochs and few images. Its numbers check that the pipeline works; do not "
                "interpret them. Run without --quick for findings.</div>")

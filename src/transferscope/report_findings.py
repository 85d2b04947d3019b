"""Findings of the report: one sentence each, linked to its evidence, with its intervals.

Works on what the analyses' findings functions return: HTML strings (long ones split into a
lead and per-model clauses) or objects with a ``sentence`` (or ``text``) and ``values``
(``{label: value | [value, lo, hi] | {"value", "ci95"}}``); intervals otherwise come from the
summary's ``<metric>_ci95`` entries.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from transferscope.report_html import with_class_names


@dataclass
class FindingView:
    """One finding: the analysis it comes from (its section's anchor), the sentence (HTML and
    plain text) and the numbers behind it as ``(label, value, (lo, hi) or None)``."""

    analysis: str | None
    html: str
    text: str
    values: list[tuple[str, float | None, tuple[float, float] | None]] = field(
        default_factory=list)
    parts: list[str] = field(default_factory=list)  # per-model clauses of ``html``, if split

    def __str__(self) -> str:
        return self.text


def intervals(summary: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """Every ``<metric>_ci95`` interval in a summary, with its metric's value.

    Example:
        >>> intervals({"m": {"recall": 0.5, "recall_ci95": [0.4, 0.6]}})
        [('m recall', 0.5, (0.4, 0.6))]
    """
    out = []
    if isinstance(summary, dict):
        for k, v in summary.items():
            if str(k).endswith("_ci95") and isinstance(v, (list, tuple)) and len(v) == 2:
                base = str(k).removesuffix("_ci95")
                out.append((" ".join(path + (base,)), summary.get(base), tuple(v)))
            elif isinstance(v, dict):
                out += intervals(v, path + (str(k),))
    return out


def split_clauses(markup: str) -> tuple[str, list[str]]:
    """A long finding ``"<b>X</b>: what - a 1; b 2."`` -> ``("<b>X</b>: what", ["a 1", "b 2"])``:
    clauses split at ``"; "`` outside parentheses, the lead ending at the first `` - `` (not
    after a digit) or else the first ``": "`` (not right after the bold title).

    Example:
        >>> split_clauses("<b>T</b> (x; y): a 1 (p; q); b 2.")
        ('<b>T</b> (x; y)', ['a 1 (p; q)', 'b 2'])
    """
    clauses, depth, start = [], 0, 0
    for i, ch in enumerate(markup):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and markup.startswith("; ", i) and not re.search(r"&#?\w+$", markup[:i]):
            clauses.append(markup[start:i])
            start = i + 2
    clauses.append(markup[start:])
    if len(clauses) < 2:
        return markup, []
    first, depth, cut = clauses[0], 0, None
    for i, ch in enumerate(first):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and first.startswith(" - ", i) and not first[i - 1:i].isdigit():
            cut = (i, 3)
            break
    if cut is None:
        depth = 0
        for i, ch in enumerate(first):
            depth += (ch == "(") - (ch == ")")
            if depth == 0 and first.startswith(": ", i) and not first[:i].endswith("</b>"):
                cut = (i, 2)
                break
    if cut is None:
        return markup, []
    clauses[0] = first[cut[0] + cut[1]:]
    clauses[-1] = clauses[-1].rstrip().removesuffix(".")
    return first[:cut[0]], clauses


def _plain(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def as_finding(item: Any, analysis: str | None, summary: dict) -> FindingView:
    """A finding from an HTML string or from an object with ``sentence``/``text`` and
    ``values`` (``{label: value | [value, lo, hi] | {"value", "ci95"}}``)."""
    if isinstance(item, str):
        markup = with_class_names(item, for_html=True)
        lead, parts = split_clauses(markup)
        return FindingView(analysis, lead if parts else markup,
                           with_class_names(_plain(item)), intervals(summary), parts)
    sentence = str(getattr(item, "sentence", None) or getattr(item, "text", ""))
    values = []
    raw = getattr(item, "values", None) or {}
    for label, v in (raw.items() if isinstance(raw, dict) else raw):
        if isinstance(v, dict):
            values.append((str(label), v.get("value"), tuple(v["ci95"]) if v.get("ci95") else None))
        elif isinstance(v, (list, tuple)) and len(v) == 3:
            values.append((str(label), v[0], (v[1], v[2])))
        else:
            values.append((str(label), v, None))
    return FindingView(getattr(item, "analysis", None) or analysis,
                       html.escape(with_class_names(sentence)), with_class_names(sentence),
                       values or intervals(summary))


def collect_findings(results: dict, findings_fn: Callable[[dict], list],
                     order: list[str] | None = None) -> list[FindingView]:
    """The findings of every analysis (in ``order``, then the rest), each tagged with the
    analysis it comes from."""
    rank = {n: i for i, n in enumerate(order or [])}
    names = sorted(results, key=lambda n: rank.get(n, len(rank)))
    return [as_finding(f, name, results[name].summary)
            for name in names for f in findings_fn({name: results[name]})]


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else html.escape(str(v))


def findings_html(items: list[FindingView], max_values: int = 6) -> str:
    """The findings list: one sentence each, a link to its evidence, its intervals."""
    if not items:
        return ""
    lis = []
    for f in items:
        ci = [f"<span class='ci'>{html.escape(label)} {_num(v)}"
              + (f" [{_num(iv[0])}, {_num(iv[1])}]" if iv else "") + "</span>"
              for label, v, iv in f.values[:max_values]]
        more = f"<span class='ci'>+{len(f.values) - max_values} more</span>" \
            if len(f.values) > max_values else ""
        link = f" <a class='evidence' href='#{html.escape(f.analysis)}'>evidence</a>" \
            if f.analysis else ""
        parts = "".join(f"<li>{p}</li>" for p in f.parts)
        lis.append(f"<li>{f.html}{':' if parts else ''}{link}"
                   + (f"<ul class='parts'>{parts}</ul>" if parts else "")
                   + (f"<div class='cis'>{''.join(ci)}{more}</div>" if ci else "") + "</li>")
    note = "<p class='note'>Numbers with their 95% intervals in brackets.</p>" \
        if any(f.values for f in items) else ""
    return (f"<section class='findings' id='findings'><h2>Findings</h2>{note}"
            f"<ol>{''.join(lis)}</ol></section>")

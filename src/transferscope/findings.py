"""One structured finding type, and the papers' claims a study can test.

A :class:`Finding` is what an analysis says in plain words, built from parts rather than from
prose: a title and lead, per-model clauses, the estimates with their intervals (unit and n
included), the claims of the papers it tests with a verdict each, a caveat when its settings
are too small, and a next step. The report renders it as is, ``results/findings.json``
exports it, ``Report.findings()`` returns it. Text is plain (never HTML): whatever shows it
escapes it.

Example:
    >>> from transferscope.stats import Interval, Verdict
    >>> f = Finding("Grad-CAM distraction", "mean IoU with the source model's map",
    ...             clauses=("ft 0.42", "scratch 0.31"),
    ...             estimates=(("ft", Interval(0.42, 0.38, 0.47, "background image", 20)),))
    >>> f.text
    "Grad-CAM distraction: mean IoU with the source model's map - ft 0.42; scratch 0.31."
    >>> f.values[0]
    ('ft', 0.42, (0.38, 0.47))
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from transferscope.stats import Interval, Verdict

__all__ = ["Claim", "CLAIM_KEYS", "ClaimCheck", "CLAIMS", "claims_table", "Finding"]


@dataclass(frozen=True)
class Claim:
    """A claim of one of the papers, in the project's words; ``key`` is stable
    (``"<paper>.<what>"``) and ``analysis`` names the analysis that tests it."""

    key: str
    paper: str
    words: str
    analysis: str
    needs: str = ""


# Every claim of papers 000-004 an audit can test on the user's data, in report order.
CLAIMS: tuple[Claim, ...] = (
    Claim("000.retained", "paper 000, Table 1", "a fine-tuned backbone with the source head "
          "still recognises many source classes", "retained_knowledge",
          "a fine-tuned model and its source model"),
    Claim("000.bias", "paper 000, eq. 1, Table 2", "some source classes are strongly biased "
          "toward target classes (more than chance at this number of views)",
          "interference_bias", "a fine-tuned model and source images with several views"),
    Claim("000.composites", "paper 000, Fig. 2", "backgrounds biased against the pasted class "
          "hurt fine-tuned models more than models trained from scratch", "composites",
          "a fine-tuned and a from-scratch model"),
    Claim("000.agreement", "paper 000, Fig. 5-6", "models fine-tuned from the same source "
          "agree on which source classes are biased", "agreement",
          "two fine-tuned models from one source"),
    Claim("001.lingering", "paper 001, eq. 3", "source-only features linger in the fine-tuned "
          "backbone (a non-empty lingering set L)", "lingering_features",
          "a fine-tuned model and its source model"),
    Claim("001.distraction", "paper 001, eq. 4, Fig. 3a", "fine-tuned models are more "
          "distracted by source features on the background than models trained from scratch",
          "distraction", "a fine-tuned and a from-scratch model"),
    Claim("001.occlusion", "paper 001, Sec. 4", "occluding the background of composites "
          "restores the fine-tuned model's accuracy", "occlusion", "a fine-tuned model"),
    Claim("001.detector", "paper 001, eq. 5", "lingering-feature activations flag images "
          "the model gets wrong (the detector predicts mistakes)", "interference_detector",
          "a fine-tuned model and its source model"),
    Claim("002.gap", "paper 002, Table 2, Fig. 5", "a larger domain gap brings lower "
          "transferability", "transferability_factors", "at least 4 target tasks"),
    Claim("002.lower_layers", "paper 002, Fig. 6", "the lowest layers are usually not the "
          "most transferable", "transferability", "a fine-tuned and a from-scratch run"),
    Claim("003.mistakes", "paper 003, Sec. 3.2", "two P-T models share more mistakes than two "
          "RI-T models", "mistakes", "two P-T and two RI-T runs"),
    Claim("003.cka", "paper 003, Table 1", "two P-T models are more similar in feature space "
          "(CKA) than two RI-T models", "cka", "two P-T and two RI-T runs"),
    Claim("003.distance", "paper 003, Table 1", "two P-T models are closer in parameter space "
          "(l2) than two RI-T models", "distances", "two P-T and two RI-T runs"),
    Claim("003.barrier", "paper 003, Fig. 4", "there is no performance barrier between two "
          "P-T models", "barriers", "two P-T runs"),
    Claim("003.basin", "paper 003, Def. 3.1", "P-T solutions lie in one flat basin",
          "basins", "two P-T runs"),
    Claim("003.criticality", "paper 003, Sec. 3.4", "lower modules of a P-T model are less "
          "critical than higher ones", "criticality", "a P-T model"),
)
CLAIM_KEYS = {c.key: c for c in CLAIMS}


@dataclass(frozen=True)
class ClaimCheck:
    """One claim tested on the user's data: the verdict, why, the estimate it rests on and
    the test that gave it."""

    claim: str
    verdict: Verdict
    why: str
    estimate: Interval | None = None
    test: str = ""

    def __post_init__(self):
        if self.claim not in CLAIM_KEYS:
            raise ValueError(f"unknown claim {self.claim!r}; known: {', '.join(CLAIM_KEYS)}")

    @property
    def about(self) -> Claim:
        return CLAIM_KEYS[self.claim]

    def to_dict(self) -> dict:
        c = self.about
        return {"claim": self.claim, "paper": c.paper, "words": c.words,
                "verdict": self.verdict.value, "why": self.why, "test": self.test,
                "estimate": self.estimate.to_dict() if self.estimate else None}


@dataclass(frozen=True)
class Finding:
    """One finding of an analysis.

    Attributes:
        title: short name ("Grad-CAM distraction").
        lead: what is measured, in words.
        clauses: one plain-text clause per model or comparison.
        estimates: ``(label, Interval)`` pairs: value, interval, unit and n.
        checks: the papers' claims it tests (:class:`ClaimCheck`).
        caveat: e.g. "too few classes to tell"; shown with the finding, sets :attr:`too_small`.
        next_step: what the user can do about it.
        numbers: extra machine-readable numbers.
        analysis: the analysis it comes from (set by the registry).
    """

    title: str
    lead: str = ""
    clauses: tuple[str, ...] = ()
    estimates: tuple[tuple[str, Interval], ...] = ()
    checks: tuple[ClaimCheck, ...] = ()
    caveat: str = ""
    next_step: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    analysis: str | None = None

    def __post_init__(self):
        if isinstance(self.lead, dict) or "<b>" in self.title:  # Finding(html, numbers)
            import warnings

            warnings.warn("Finding(html_text, numbers) is deprecated; use Finding(title, lead, "
                          "clauses=..., estimates=...) or Finding.from_html(html_text, numbers)",
                          DeprecationWarning, stacklevel=3)
            numbers = self.lead if isinstance(self.lead, dict) else self.numbers
            new = Finding.from_html(self.title, numbers)
            for name in ("title", "lead", "clauses", "numbers"):
                object.__setattr__(self, name, getattr(new, name))

    @classmethod
    def from_html(cls, markup: str, numbers: dict | None = None, **kw) -> "Finding":
        """A finding from a legacy one-sentence markup ``"<b>Title</b> (x): lead - a 1; b 2."``
        (split once, here, into title, lead and clauses; tags dropped, entities decoded)."""
        m = re.match(r"\s*<b>(.*?)</b>\s*(.*)$", markup, re.S)
        title, rest = (m.group(1), m.group(2)) if m else ("", markup)
        lead, parts = _split_clauses(rest.lstrip(": ").strip())
        plain = lambda s: html.unescape(re.sub(r"<[^>]+>", "", s)).strip()  # noqa: E731
        return cls(plain(title), plain(lead).rstrip("."), tuple(plain(p) for p in parts),
                   numbers=dict(numbers or {}), **kw)

    @property
    def too_small(self) -> bool:
        return bool(self.caveat)

    @property
    def text(self) -> str:
        """The finding as one plain sentence."""
        sep = " " if self.lead.startswith("(") else ": "
        head = self.title + (f"{sep}{self.lead}" if self.lead else "")
        body = head + (" - " + "; ".join(self.clauses) if self.clauses else "")
        body = body.rstrip(". ") + "."
        if self.caveat:
            body += f" Caution: {self.caveat.rstrip('.')}."
        for c in self.checks:
            body += f" Paper claim ({c.about.paper}: {c.about.words}): {c.verdict.words} - {c.why}."
        if self.next_step:
            body += f" Next: {self.next_step.rstrip('.')}."
        return body

    @property
    def html(self) -> str:
        """The lead as escaped HTML (title in bold); clauses are rendered as a list by the
        report."""
        e = html.escape
        sep = " " if self.lead.startswith("(") else ": "
        return f"<b>{e(self.title)}</b>" + (f"{sep}{e(self.lead)}" if self.lead else "")

    @property
    def values(self) -> list[tuple[str, float | None, tuple[float, float] | None]]:
        return [(label, iv.value, iv.ci if iv.finite else None) for label, iv in self.estimates]

    @property
    def parts(self) -> list[str]:
        return [html.escape(c) for c in self.clauses]

    def with_analysis(self, name: str) -> "Finding":
        from dataclasses import replace

        return replace(self, analysis=name)

    def to_dict(self) -> dict:
        return {"analysis": self.analysis, "title": self.title, "lead": self.lead,
                "clauses": list(self.clauses), "text": self.text,
                "estimates": [{"label": k, **iv.to_dict()} for k, iv in self.estimates],
                "checks": [c.to_dict() for c in self.checks], "caveat": self.caveat,
                "too_small": self.too_small, "next_step": self.next_step,
                "numbers": _jsonable(self.numbers)}

    def __str__(self) -> str:
        return self.text


def _jsonable(v):
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def _split_clauses(markup: str) -> tuple[str, list[str]]:
    """``"what - a 1; b 2."`` -> ``("what", ["a 1", "b 2"])``: clauses split at ``"; "``
    outside parentheses (and not inside an entity), the lead ending at the first `` - `` not
    after a digit, else at the first ``": "``.

    >>> _split_clauses("(x; y): a 1 (p; q); b 2.")
    ('(x; y)', ['a 1 (p; q)', 'b 2'])
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
    for sep in (" - ", ": "):
        depth = 0
        for i, ch in enumerate(first):
            depth += (ch == "(") - (ch == ")")
            if depth == 0 and first.startswith(sep, i) and not (
                    sep == " - " and first[i - 1:i].isdigit()):
                cut = (i, len(sep))
                break
        if cut:
            break
    if cut is None:
        return markup, []
    clauses[0] = first[cut[0] + cut[1]:]
    clauses[-1] = clauses[-1].rstrip().removesuffix(".")
    return first[:cut[0]], clauses


def claims_table(findings: list[Finding], ran: set[str] | None = None) -> list[dict]:
    """One row per claim of :data:`CLAIMS`: its verdict from the findings that test it, or
    "not tested" with the reason (the analysis did not run, or had no test for it)."""
    checks = {c.claim: (c, f) for f in findings for c in f.checks}
    rows = []
    for claim in CLAIMS:
        if claim.key in checks:
            c, f = checks[claim.key]
            rows.append({"claim": claim.key, "paper": claim.paper, "words": claim.words,
                         "verdict": c.verdict.value, "why": c.why, "test": c.test,
                         "estimate": str(c.estimate) if c.estimate else "",
                         "analysis": f.analysis or claim.analysis})
        else:
            why = (f"{claim.analysis} did not run (needs {claim.needs})"
                   if ran is not None and claim.analysis not in ran
                   else f"{claim.analysis} gave no test of it (needs {claim.needs})")
            rows.append({"claim": claim.key, "paper": claim.paper, "words": claim.words,
                         "verdict": Verdict.NOT_TESTED.value, "why": why, "test": "",
                         "estimate": "", "analysis": claim.analysis})
    return rows

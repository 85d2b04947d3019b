"""``transferscope check``: compare a finished study's results with thresholds - a CI gate.

Rules (:mod:`transferscope.studies.check_rules`: a ``[check]`` table, ``[[check]]`` tables or
``--rule`` text) read ``OUT/results/findings.json`` (every finding's ``numbers`` and
``estimates``, and the papers' claims table) and ``OUT/results/ANALYSIS.json``'s ``summary``.
Every key a rule's glob matches is checked (each a JUnit test case) and its line names what was
tested: the point value, or the lower / upper bound of its interval. A glob that matches
nothing, an analysis the study did not run, a value that is not a number, or an interval limit
on a value without an interval is an error (exit 2) - never a silent pass.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

from transferscope.errors import ConfigError, did_you_mean
from transferscope.studies.check_rules import (VERDICTS, CheckRule,  # noqa: F401
                                               parse_rule, read_rules, rules_from_table)

__all__ = ["VERDICTS", "CheckOutcome", "CheckResult", "CheckRule", "check", "parse_rule",
           "read_rules", "rules_from_table", "summary_items"]


@dataclass
class CheckOutcome:
    """One checked key: ``status`` PASS / FAIL / ERROR and the line that says why;
    ``tested`` lists each limit as ``{"on", "value", "op", "threshold", "ok"}``."""

    rule: str
    status: Literal["PASS", "FAIL", "ERROR"]
    message: str
    key: str | None = None
    observed: float | str | None = None
    threshold: str | None = None
    interval: tuple[float, float] | None = None
    tested: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.rule + (f" [{self.key}]" if self.key else "")

    @property
    def line(self) -> str:
        return f"{self.status:5} {self.name}: {self.message}"


@dataclass
class CheckResult:
    """All outcomes; ``passed`` when none failed or errored; ``exit_code`` 0 / 1 (a check
    failed) / 2 (a rule could not be evaluated)."""

    out: Path
    outcomes: list[CheckOutcome] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.status == "PASS" for o in self.outcomes)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return 2 if self.count("ERROR") else 1 if self.count("FAIL") else 0

    def lines(self) -> list[str]:
        return [o.line for o in self.outcomes]

    def tally(self) -> str:
        """``5 of 7 checks passed, 1 failed, 1 could not be evaluated``."""
        n, fails, errors = len(self.outcomes), self.count("FAIL"), self.count("ERROR")
        return (f"{n - fails - errors} of {n} checks passed" + (f", {fails} failed" if fails
                                                                 else "")
                + (f", {errors} could not be evaluated" if errors else ""))

    def to_dict(self) -> dict:
        return {"out": str(self.out), "passed": self.passed, "exit_code": self.exit_code,
                "checks": [{"name": o.name, "rule": o.rule, "key": o.key, "status": o.status,
                            "message": o.message, "observed": o.observed,
                            "interval": list(o.interval) if o.interval else None,
                            "threshold": o.threshold, "tested": o.tested}
                           for o in self.outcomes]}

    def to_junit(self) -> str:
        """JUnit XML: ``<testsuites>`` with one testsuite, one testcase per checked key."""
        counts = dict(tests=str(len(self.outcomes)), failures=str(self.count("FAIL")),
                      errors=str(self.count("ERROR")))
        root = ET.Element("testsuites", **counts)
        suite = ET.SubElement(root, "testsuite", name="transferscope check", **counts)
        for o in self.outcomes:
            case = ET.SubElement(suite, "testcase", classname="transferscope.check",
                                 name=o.name)
            if o.status != "PASS":
                ET.SubElement(case, "failure" if o.status == "FAIL" else "error",
                              message=o.message).text = o.line
        return ET.tostring(root, encoding="unicode", xml_declaration=True)


@dataclass
class _Obs:
    """An observed value and, when it has one, its interval (an Interval's JSON dict)."""

    value: object
    iv: dict | None = None


def _flatten(numbers: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in numbers.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _as_interval(v) -> dict | None:
    """An Interval's JSON dict, or a ``*_ci95`` pair ``[lo, hi]``, as an interval dict."""
    if isinstance(v, dict) and {"lo", "hi"} <= v.keys():
        return v
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return {"lo": v[0], "hi": v[1], "level": 0.95}
    return None


def summary_items(obj, prefix: str = "") -> dict[str, _Obs]:
    """A summary's values by dotted path (list items by index); an Interval's dict is one
    value with its interval, and ``X`` takes the interval of a sibling ``X_ci95`` /
    ``X_interval`` / ``X_iv``.

    Example:
        >>> items = summary_items({"m": {"acc": 0.8, "acc_ci95": [0.7, 0.9], "runs": [3, 4]}})
        >>> items["m.acc"].iv["hi"], items["m.runs.1"].value
        (0.9, 4)
    """
    out: dict[str, _Obs] = {}
    if isinstance(obj, dict) and {"value", "lo", "hi"} <= obj.keys():
        return {prefix.rstrip("."): _Obs(obj["value"], obj)}
    children = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, list) else ()
    for k, v in children:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            out.update(summary_items(v, key + "."))
        else:
            out[key] = _Obs(v)
    if isinstance(obj, dict):
        for k, v in obj.items():
            sibling = next((obj[k + s] for s in ("_ci95", "_interval", "_iv") if k + s in obj),
                           None)
            iv = _as_interval(sibling)
            if iv is not None and not isinstance(v, (dict, list)):
                out[f"{prefix}{k}"] = _Obs(v, iv)
    return out


def _interval_words(value, iv: dict) -> str:
    """``0.24 [0.18, 0.31] (95 %, 20 background images)``."""
    shown = "nan" if value is None else f"{value:.4g}" if isinstance(value, (int, float)) \
        else repr(value)
    if iv is None or iv.get("lo") is None or iv.get("hi") is None:
        return shown
    level = f"{round(100 * iv['level'])} %" if iv.get("level") is not None else "interval"
    if iv.get("unit") and iv.get("n") is not None:
        unit = iv["unit"] + ("s" if iv["n"] != 1 and not iv["unit"].endswith("s") else "")
        level += f", {iv['n']} {unit}"
    return f"{shown} [{iv['lo']:.4g}, {iv['hi']:.4g}] ({level})"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _limits(rule: CheckRule) -> list[tuple[str, str, str, float]]:
    """(what is tested, its key in the interval dict, op, threshold) for each limit."""
    on = {"value": ("value", "value"), "lo": ("lower bound", "lo"),
          "hi": ("upper bound", "hi")}[rule.bound]
    out = []
    for limit, op, what in ((rule.min, ">=", on), (rule.max, "<=", on),
                            (rule.ci_min, ">=", ("lower bound", "lo")),
                            (rule.ci_max, "<=", ("upper bound", "hi"))):
        if limit is not None:
            out.append((*what, op, float(limit)))
    return out


def _test(rule: CheckRule, key: str, obs: _Obs) -> CheckOutcome:
    shown = _interval_words(obs.value, obs.iv)
    has_iv = obs.iv is not None and obs.iv.get("lo") is not None
    threshold = " and ".join(f"{what} {op} {t:g}"
                             for what, _, op, t in _limits(rule))
    parts, tested, status = [], [], "PASS"
    for what, field_, op, limit in _limits(rule):
        if field_ != "value" and not has_iv:
            return CheckOutcome(rule.label, "ERROR", f"{shown} has no interval, so its {what} "
                                f"cannot be tested; use min/max for the point value", key,
                                obs.value if _number(obs.value) else None, threshold)
        value = obs.value if field_ == "value" else obs.iv[field_]
        if not _number(value):
            return CheckOutcome(rule.label, "ERROR", f"{shown}: {what} is not a finite number",
                                key, None, threshold)
        ok = value >= limit if op == ">=" else value <= limit
        status = status if ok else "FAIL"
        said = ("point estimate" if has_iv else "value (no interval)") if field_ == "value" \
            else what
        parts.append(f"{said} {value:.4g} {'meets' if ok else 'violates'} {op} {limit:g}")
        tested.append({"on": said, "value": float(value), "op": op, "threshold": limit,
                       "ok": ok})
    lead = f"{shown}: " if has_iv else ""
    return CheckOutcome(rule.label, status, lead + "; ".join(parts), key,
                        float(obs.value) if _number(obs.value) else None, threshold,
                        (obs.iv["lo"], obs.iv["hi"]) if has_iv else None, tested)


def _match(items: dict, glob: str) -> dict:
    if glob in items:  # an exact key, even one with glob characters ('[50,60[')
        return {glob: items[glob]}
    return {k: v for k, v in items.items() if fnmatch.fnmatchcase(k, glob)}


class _Study:
    """A results folder's findings, claims and (read when needed) summaries."""

    def __init__(self, out: Path):
        self.results = out / "results"
        path = self.results / "findings.json"
        if not path.is_file():
            raise ConfigError(f"{out}: no results/findings.json; run the study first "
                              "(transferscope audit STUDY --out OUT, or check --run STUDY)")
        doc = json.loads(path.read_text())
        self.findings = {f["analysis"]: f for f in doc.get("findings", [])}
        self.claims = {c["claim"]: c for c in doc.get("claims", [])}
        index = self.results / "index.json"
        self.index = json.loads(index.read_text()) if index.is_file() else {}
        self.ran = list(dict.fromkeys([*self.findings, *self.index.get("analyses", [])]))
        self._summaries: dict[str, dict | None] = {}

    def summary(self, analysis: str):
        if analysis not in self._summaries:
            path = self.results / f"{analysis}.json"
            self._summaries[analysis] = (json.loads(path.read_text()).get("summary")
                                         if path.is_file() else None)
        return self._summaries[analysis]

    def sources(self, rule: CheckRule) -> list[tuple[str, dict[str, _Obs]]]:
        finding = self.findings.get(rule.analysis) or {}
        numbers = {k: _Obs(v) for k, v in _flatten(finding.get("numbers") or {}).items()}
        estimates = {e["label"]: _Obs(e.get("value"), e) for e in finding.get("estimates") or []}
        wanted = [w for w in ("number", "estimate", "summary") if getattr(rule, w) is not None] \
            or ["estimate", "number", "summary"]  # the short form: intervals first
        out = []
        for w in wanted:
            items = numbers if w == "number" else estimates if w == "estimate" else \
                summary_items(self.summary(rule.analysis) or {})
            out.append(({"number": "numbers", "estimate": "estimates",
                         "summary": "summary"}[w], items))
        return out

    def evaluate(self, rule: CheckRule) -> list[CheckOutcome]:
        if rule.claim is not None:
            return [self._claim(rule)]
        if rule.analysis not in self.findings and self.summary(rule.analysis) is None:
            skipped = rule.analysis in self.index.get("skipped_analyses", [])
            return [CheckOutcome(rule.label, "ERROR", f"the study has no results of "
                                 f"{rule.analysis!r}" + (" (it was skipped)" if skipped else
                                                         did_you_mean(rule.analysis, self.ran))
                                 + "; it has: " + (", ".join(self.ran) or "(none)"))]
        tried = []
        for where, items in self.sources(rule):
            matched = _match(items, rule.glob)
            if matched:  # a short-form key says where it was found
                return [_test(rule, f"{where}: {k}" if rule.path is not None else k, obs)
                        for k, obs in matched.items()]
            tried.append((where, items))
        near = [k for _, items in tried for k in items]
        shown = "; ".join(f"{where}: " + (", ".join(map(repr, list(items)[:12]))
                                          + (", ..." if len(items) > 12 else "") or "(none)")
                          for where, items in tried)
        return [CheckOutcome(rule.label, "ERROR", f"{rule.glob!r} matches no key of "
                             f"{rule.analysis}{did_you_mean(rule.glob, near)}; its {shown}")]

    def _claim(self, rule: CheckRule) -> CheckOutcome:
        if rule.claim not in self.claims:
            return CheckOutcome(rule.label, "ERROR", f"no claim {rule.claim!r} in the claims "
                                f"table{did_you_mean(rule.claim, list(self.claims))}; claims: "
                                + (", ".join(self.claims) or "(none)"))
        verdict = self.claims[rule.claim]["verdict"]
        ok = (rule.verdict is None or verdict in rule.verdict) and \
            verdict not in (rule.not_ or [])
        want = f"one of {rule.verdict}" if rule.verdict is not None else f"none of {rule.not_}"
        why = self.claims[rule.claim].get("why", "")
        return CheckOutcome(rule.label, "PASS" if ok else "FAIL",
                            f"verdict {verdict!r} ({'is' if ok else 'is not'} {want})"
                            + (f": {why}" if why and not ok else ""), None, verdict, want)


def check(out: str | Path, rules: list[CheckRule] | None = None) -> CheckResult:
    """Check the study in ``out`` against ``rules`` (default: ``out/study.toml``'s ``check``).

    Example:
        >>> import tempfile; from pathlib import Path
        >>> out = Path(tempfile.mkdtemp()); (out / "results").mkdir()
        >>> _ = (out / "results" / "findings.json").write_text('{"findings": [{"analysis": '
        ...     '"distraction", "numbers": {}, "estimates": [{"label": "ft", "value": 0.2, '
        ...     '"lo": 0.1, "hi": 0.35, "level": 0.95, "unit": "image", "n": 20}]}]}')
        >>> res = check(out, [parse_rule("distraction.ft<=0.3"),
        ...                   *rules_from_table({"distraction.ft": {"ci_max": 0.3}}, "x")])
        >>> print("\\n".join(res.lines()))  # doctest: +NORMALIZE_WHITESPACE
        PASS  distraction.ft [estimates: ft]: 0.2 [0.1, 0.35] (95 %, 20 images):
              point estimate 0.2 meets <= 0.3
        FAIL  distraction.ft [estimates: ft]: 0.2 [0.1, 0.35] (95 %, 20 images):
              upper bound 0.35 violates <= 0.3
        >>> res.exit_code
        1
    """
    out = Path(out)
    study = _Study(out)
    if rules is None:
        rules = read_rules(out / "study.toml") if (out / "study.toml").is_file() else []
    if not rules:
        raise ConfigError(f"no checks: give --rules FILE or --rule, or add a [check] table "
                          f"to {out / 'study.toml'}")
    result = CheckResult(out)
    for rule in rules:
        result.outcomes += study.evaluate(rule)
    return result

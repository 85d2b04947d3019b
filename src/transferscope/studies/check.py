"""``transferscope check``: compare a finished study's findings with thresholds - a CI gate.

Rules read ``OUT/results/findings.json`` (every finding's ``numbers`` and ``estimates``, and
the papers' claims table). A study file or a rules file holds them as ``[[check]]`` tables::

    [[check]]                          # every fine-tuned M^st keeps >= 100 source classes
    name = "retained knowledge"
    analysis = "retained_knowledge"
    number = "*M^st*"                  # glob over the finding's numbers (nested: "model.key")
    min = 100

    [[check]]                          # distraction below 0.3 - its interval's upper bound
    analysis = "distraction"
    estimate = "fine-tuned"            # glob over the finding's estimate labels
    max = 0.3
    bound = "hi"                       # value (default) | lo | hi: which end of the interval

    [[check]]
    claim = "001.distraction"          # a paper's claim: its verdict must not be ...
    not = ["contradicts"]              # (or verdict = ["agrees"]: must be one of)

Every key a glob matches is checked (each a JUnit test case); a glob that matches nothing, or
an analysis the study did not run, is an error (exit 2) - never a silent pass.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from transferscope.errors import ConfigError, did_you_mean

VERDICTS = ("agrees", "contradicts", "cannot tell", "not tested")


class CheckRule(BaseModel):
    """One ``[[check]]`` table (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, description="shown in the output and as the JUnit name")
    analysis: str | None = Field(None, description="the finding's analysis")
    number: str | None = Field(None, description="glob over the finding's numbers")
    estimate: str | None = Field(None, description="glob over the finding's estimate labels")
    bound: Literal["value", "lo", "hi"] = Field("value", description="for estimates: the "
                                                "point estimate or an end of its interval")
    min: float | None = Field(None, description="pass when the value is at least this")
    max: float | None = Field(None, description="pass when the value is at most this")
    claim: str | None = Field(None, description="a claim key of the claims table, e.g. "
                              "'001.distraction'")
    verdict: list[str] | None = Field(None, description="the claim's verdict must be one of")
    not_: list[str] | None = Field(None, alias="not", description="the claim's verdict must "
                                   "not be one of")

    @model_validator(mode="after")
    def _one_kind(self):
        if self.claim is not None:
            if self.verdict is None and self.not_ is None:
                raise ValueError("a claim rule needs verdict = [...] or not = [...]")
            for v in (self.verdict or []) + (self.not_ or []):
                if v not in VERDICTS:
                    raise ValueError(f"verdict {v!r}{did_you_mean(v, VERDICTS)}: use one of "
                                     f"{', '.join(VERDICTS)}")
            return self
        if self.analysis is None or (self.number is None) == (self.estimate is None):
            raise ValueError("a rule names an analysis and exactly one of number = 'GLOB' or "
                             "estimate = 'GLOB' (or a claim)")
        if self.min is None and self.max is None:
            raise ValueError("a value rule needs min and/or max")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.claim:
            return f"claim {self.claim}"
        what = f"number {self.number!r}" if self.number else f"estimate {self.estimate!r}"
        return f"{self.analysis} {what}"


_CLI_VALUE = re.compile(r"^(?P<analysis>\w+):(?P<what>number|estimate)(?:\.(?P<bound>lo|hi))?:"
                        r"(?P<glob>.+?)\s*(?P<op><=|>=)\s*(?P<value>[-+0-9.eE]+)$")
_CLI_CLAIM = re.compile(r"^claim:(?P<claim>[\w.]+)\s*(?P<op>!=|==)\s*(?P<verdict>[\w ]+)$")


def parse_rule(text: str) -> CheckRule:
    """A rule from the command line: ``ANALYSIS:number:GLOB>=X``,
    ``ANALYSIS:estimate[.lo|.hi]:GLOB<=X`` or ``claim:KEY!=VERDICT`` / ``claim:KEY==VERDICT``.

    Example:
        >>> parse_rule("distraction:estimate.hi:fine-tuned<=0.3").max
        0.3
        >>> parse_rule("claim:001.distraction!=contradicts").not_
        ['contradicts']
    """
    m = _CLI_VALUE.match(text.strip())
    if m:
        limit = {"min" if m["op"] == ">=" else "max": float(m["value"])}
        return _rule({"analysis": m["analysis"], m["what"]: m["glob"],
                      "bound": m["bound"] or "value", **limit}, f"--rule {text!r}")
    m = _CLI_CLAIM.match(text.strip())
    if m:
        return _rule({"claim": m["claim"], ("verdict" if m["op"] == "==" else "not"):
                      [m["verdict"].strip()]}, f"--rule {text!r}")
    raise ConfigError(f"--rule {text!r}: write ANALYSIS:number:GLOB>=X, "
                      "ANALYSIS:estimate[.lo|.hi]:GLOB<=X or claim:KEY!=VERDICT")


def _rule(data: dict, where: str) -> CheckRule:
    try:
        return CheckRule(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(map(str, err["loc"]))
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{where}: unknown key {key!r}"
                              f"{did_you_mean(key, [*CheckRule.model_fields, 'not'])}") from None
        raise ConfigError(f"{where}: {key + ': ' if key else ''}"
                          f"{err['msg'].removeprefix('Value error, ')}") from None


def read_rules(path: str | Path) -> list[CheckRule]:
    """The ``[[check]]`` tables of a TOML file (a study file or a rules file)."""
    from transferscope.studies.spec import read_toml

    path = Path(path)
    tables = read_toml(path, "rules file").get("check", [])
    if isinstance(tables, dict):
        tables = [tables]
    return [_rule(t, f"{path}: [[check]] #{i}") for i, t in enumerate(tables, 1)]


@dataclass
class CheckOutcome:
    """One checked key: ``status`` PASS / FAIL / ERROR and the line that says why."""

    rule: str
    status: Literal["PASS", "FAIL", "ERROR"]
    message: str
    key: str | None = None
    observed: float | str | None = None
    threshold: str | None = None

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

    @property
    def exit_code(self) -> int:
        if any(o.status == "ERROR" for o in self.outcomes):
            return 2
        return 1 if any(o.status == "FAIL" for o in self.outcomes) else 0

    def lines(self) -> list[str]:
        return [o.line for o in self.outcomes]

    def to_dict(self) -> dict:
        return {"out": str(self.out), "passed": self.passed, "exit_code": self.exit_code,
                "checks": [{"name": o.name, "status": o.status, "message": o.message,
                            "observed": o.observed, "threshold": o.threshold}
                           for o in self.outcomes]}

    def to_junit(self) -> str:
        """JUnit XML: ``<testsuites>`` with one testsuite, one testcase per checked key."""
        counts = dict(tests=str(len(self.outcomes)),
                      failures=str(sum(o.status == "FAIL" for o in self.outcomes)),
                      errors=str(sum(o.status == "ERROR" for o in self.outcomes)))
        root = ET.Element("testsuites", **counts)
        suite = ET.SubElement(root, "testsuite", name="transferscope check", tests=str(len(
            self.outcomes)), failures=str(sum(o.status == "FAIL" for o in self.outcomes)),
            errors=str(sum(o.status == "ERROR" for o in self.outcomes)))
        for o in self.outcomes:
            case = ET.SubElement(suite, "testcase", classname="transferscope.check",
                                 name=o.name)
            if o.status != "PASS":
                ET.SubElement(case, "failure" if o.status == "FAIL" else "error",
                              message=o.message).text = o.line
        return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _flatten(numbers: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in numbers.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _interval_words(e: dict) -> str:
    """``0.24 [0.18, 0.31] (95 %, 20 background images)``."""
    value = "nan" if e.get("value") is None else f"{e['value']:.4g}"
    if e.get("lo") is None or e.get("hi") is None:
        return value
    unit = e["unit"] + ("s" if e.get("n") != 1 and not e["unit"].endswith("s") else "")
    return (f"{value} [{e['lo']:.4g}, {e['hi']:.4g}] ({round(100 * e['level'])} %, "
            f"{e['n']} {unit})")


def _value_rule(rule: CheckRule, finding: dict) -> list[CheckOutcome]:
    if rule.number is not None:
        items = {k: (v, None) for k, v in _flatten(finding.get("numbers") or {}).items()}
        glob = rule.number
    else:
        items = {e["label"]: (e.get(rule.bound), e) for e in finding.get("estimates") or []}
        glob = rule.estimate
    matched = {k: v for k, v in items.items() if fnmatch.fnmatchcase(k, glob)}
    if not matched:
        return [CheckOutcome(rule.label, "ERROR", f"{glob!r} matches none of "
                             f"{rule.analysis}'s {'numbers' if rule.number else 'estimates'}: "
                             + (", ".join(map(repr, items)) or "(none)")
                             + did_you_mean(glob, list(items)))]
    limits = " and ".join(([f">= {rule.min:g}"] if rule.min is not None else [])
                          + ([f"<= {rule.max:g}"] if rule.max is not None else []))
    out = []
    for key, (value, est) in matched.items():
        if est is None:
            shown = repr(value)
        elif rule.bound == "value":
            shown = _interval_words(est)
        else:
            end = "lower" if rule.bound == "lo" else "upper"
            shown = (f"{end} bound {value:.4g} of {_interval_words(est)}"
                     if isinstance(value, (int, float)) else f"{end} bound of "
                     + _interval_words(est))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                not math.isfinite(value):
            out.append(CheckOutcome(rule.label, "ERROR", f"{shown} is not a finite number",
                                    key, None, limits))
            continue
        ok = (rule.min is None or value >= rule.min) and (rule.max is None or value <= rule.max)
        out.append(CheckOutcome(rule.label, "PASS" if ok else "FAIL",
                                f"{shown} {'meets' if ok else 'violates'} {limits}",
                                key, float(value), limits))
    return out


def _claim_rule(rule: CheckRule, claims: list[dict]) -> list[CheckOutcome]:
    found = {c["claim"]: c for c in claims}
    if rule.claim not in found:
        return [CheckOutcome(rule.label, "ERROR", f"no claim {rule.claim!r} in the claims "
                             f"table{did_you_mean(rule.claim, list(found))}; claims: "
                             + ", ".join(found))]
    verdict = found[rule.claim]["verdict"]
    ok = (rule.verdict is None or verdict in rule.verdict) and verdict not in (rule.not_ or [])
    want = (f"one of {rule.verdict}" if rule.verdict is not None else
            f"none of {rule.not_}")
    why = found[rule.claim].get("why", "")
    return [CheckOutcome(rule.label, "PASS" if ok else "FAIL",
                         f"verdict {verdict!r} ({'is' if ok else 'is not'} {want})"
                         + (f": {why}" if why and not ok else ""), None, verdict, want)]


def check(out: str | Path, rules: list[CheckRule] | None = None) -> CheckResult:
    """Check the study in ``out`` against ``rules`` (default: the ``[[check]]`` tables of
    ``out/study.toml``)."""
    out = Path(out)
    path = out / "results" / "findings.json"
    if not path.is_file():
        raise ConfigError(f"{out}: no results/findings.json; run the study first "
                          "(transferscope audit STUDY --out OUT, or check --run STUDY)")
    if rules is None:
        rules = read_rules(out / "study.toml") if (out / "study.toml").is_file() else []
    if not rules:
        raise ConfigError(f"no checks: give --rules FILE or --rule, or add [[check]] tables "
                          f"to {out / 'study.toml'}")
    doc = json.loads(path.read_text())
    findings = {f["analysis"]: f for f in doc.get("findings", [])}
    result = CheckResult(out)
    for rule in rules:
        if rule.claim is not None:
            result.outcomes += _claim_rule(rule, doc.get("claims", []))
        elif rule.analysis not in findings:
            result.outcomes.append(CheckOutcome(
                rule.label, "ERROR", f"the study has no finding of {rule.analysis!r}"
                f"{did_you_mean(rule.analysis, list(findings))}; it has: "
                + ", ".join(findings)))
        else:
            result.outcomes += _value_rule(rule, findings[rule.analysis])
    return result

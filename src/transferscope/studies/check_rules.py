"""The rules of ``transferscope check``: a ``[check]`` table (study file or rules file), the
long ``[[check]]`` form, and ``--rule`` text, all validated into :class:`CheckRule` (pydantic)
before any result is read.

The short form, one key per rule: ``ANALYSIS.KEY``, where KEY (a glob) is looked up in the
analysis's finding ``estimates`` labels (values with intervals), then its ``numbers``, then
``results/ANALYSIS.json``'s ``summary`` by dotted path - the first that has a match; write
``ANALYSIS.estimates.KEY``, ``ANALYSIS.numbers.KEY`` or ``ANALYSIS.summary.KEY`` to choose -
or ``claims.CLAIM``::

    [check]
    "retained_knowledge.numbers.*M^st*" = { min = 100 }         # every M^st keeps >= 100 classes
    "distraction.fine-tuned" = { ci_max = 0.3 }                 # interval's upper bound <= 0.3
    "barriers.summary.P-T #1 - P-T #2.loss_barrier" = { ci_max = 0.1 }  # a summary value
    claims."001.distraction" = { not = "contradicts" }          # a paper's claim's verdict

Limits: ``min`` / ``max`` test the point value (or the interval end chosen by ``bound``),
``ci_min`` the interval's lower bound and ``ci_max`` its upper bound (the whole interval above /
below: a number without uncertainty is half a finding); ``verdict`` / ``not`` a claim's verdict.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, \
    model_validator

from transferscope.errors import ConfigError, did_you_mean

__all__ = ["CheckRule", "OPTION_KEYS", "parse_rule", "read_rules", "rules_from_table", "VERDICTS",
           "WHERE"]

VERDICTS = ("agrees", "contradicts", "cannot tell", "not tested")
#: what a short-form rule's ``{ ... }`` may hold
OPTION_KEYS = ("name", "min", "max", "ci_min", "ci_max", "bound", "verdict", "not")
WHERE = ("number", "estimate", "summary", "path")


class CheckRule(BaseModel):
    """One rule (see the module docstring); ``path`` searches numbers, estimates, summary."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, description="shown in the output and as the JUnit name")
    analysis: str | None = Field(None, description="the analysis whose results are checked")
    number: str | None = Field(None, description="glob over the finding's numbers "
                               "('model.key' when nested)")
    estimate: str | None = Field(None, description="glob over the finding's estimate labels")
    summary: str | None = Field(None, description="glob over results/ANALYSIS.json's summary, "
                                "as dotted paths (list items by index)")
    path: str | None = Field(None, description="glob looked up in numbers, then estimates, "
                             "then the summary (the short form's key)")
    bound: Literal["value", "lo", "hi"] = Field("value", description="what min/max test: the "
                                                "point value or an end of its interval")
    min: float | None = Field(None, description="pass when the value is at least this")
    max: float | None = Field(None, description="pass when the value is at most this")
    ci_min: float | None = Field(None, description="pass when the interval's lower bound is at "
                                 "least this (the whole interval above)")
    ci_max: float | None = Field(None, description="pass when the interval's upper bound is at "
                                 "most this (the whole interval below)")
    claim: str | None = Field(None, description="a claim key of the claims table, e.g. "
                              "'001.distraction'")
    verdict: list[str] | None = Field(None, description="the claim's verdict must be one of")
    not_: list[str] | None = Field(None, alias="not", description="the claim's verdict must "
                                   "not be one of")

    @field_validator("verdict", "not_", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_kind(self):
        limits = [self.min, self.max, self.ci_min, self.ci_max]
        where = [w for w in WHERE if getattr(self, w) is not None]
        if self.claim is not None:
            if self.verdict is None and self.not_ is None:
                raise ValueError("a claim rule needs verdict = [...] or not = [...]")
            if where or self.analysis or any(x is not None for x in limits):
                raise ValueError("a claim rule takes verdict / not only (no analysis, min, max)")
            for v in (self.verdict or []) + (self.not_ or []):
                if v not in VERDICTS:
                    raise ValueError(f"verdict {v!r}{did_you_mean(v, VERDICTS)}: use one of "
                                     f"{', '.join(VERDICTS)}")
            return self
        if self.analysis is None or len(where) != 1:
            raise ValueError("a rule names an analysis and exactly one of number, estimate, "
                             "summary or path = 'GLOB' (or a claim)")
        if self.verdict is not None or self.not_ is not None:
            raise ValueError("verdict / not are for claim rules")
        if all(x is None for x in limits):
            raise ValueError("a value rule needs min, max, ci_min and/or ci_max")
        return self

    @property
    def glob(self) -> str | None:
        return next((getattr(self, w) for w in WHERE if getattr(self, w) is not None), None)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.claim:
            return f"claim {self.claim}"
        if self.path is not None:
            return f"{self.analysis}.{self.path}"
        kind = next(w for w in WHERE if getattr(self, w) is not None)
        return f"{self.analysis} {kind} {self.glob!r}"


def _rule(data: dict, where: str) -> CheckRule:
    """A :class:`CheckRule`, or a one-line :class:`ConfigError` naming ``where`` it went wrong."""
    try:
        return CheckRule(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(map(str, err["loc"]))
        if err["type"] == "extra_forbidden":
            known = [*(k for k in CheckRule.model_fields if k != "not_"), "not"]
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}; "
                              f"a rule takes {', '.join(known)}") from None
        key = "not" if key == "not_" else key
        raise ConfigError(f"{where}: {key + ': ' if key else ''}"
                          f"{err['msg'].removeprefix('Value error, ')}") from None


def _short(path: tuple[str, ...], options, where: str) -> CheckRule:
    """``"ANALYSIS.KEY" = { min = ... }`` or ``claims."KEY" = { not = ... }`` as a rule."""
    joined = ".".join(path)
    here = f"{where}: {joined!r}"
    if not isinstance(options, dict):
        raise ConfigError(f"{here} = {options!r}: write it as {joined!r} = {{ min = ... }} "
                          f"(options: {', '.join(OPTION_KEYS)})")
    for key in options:
        if key not in OPTION_KEYS:
            raise ConfigError(f"{here}: unknown option {key!r}{did_you_mean(key, OPTION_KEYS)};"
                              f" use {', '.join(OPTION_KEYS)}")
    head, _, rest = joined.partition(".")
    if not rest:
        raise ConfigError(f"{here}: name a key after the analysis, e.g. "
                          f"'{head}.KEY' (or claims.\"001.distraction\")")
    if head == "claims":
        return _rule({"claim": rest, **options}, here)
    where_, _, glob = rest.partition(".")
    kind = {"numbers": "number", "estimates": "estimate", "summary": "summary"}.get(where_)
    return _rule({"analysis": head, **({kind: glob} if kind and glob else {"path": rest}),
                  "name": options.get("name", joined),
                  **{k: v for k, v in options.items() if k != "name"}}, here)


def _walk(table: dict, prefix: tuple[str, ...] = ()):
    """(path, options) of a short-form table; TOML dotted keys nest, quoted keys do not."""
    for key, value in table.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value and all(isinstance(v, dict)
                                                     for v in value.values()):
            yield from _walk(value, path)
        else:
            yield path, value


def rules_from_table(check, where: str) -> list[CheckRule]:
    """The rules of a study's or rules file's ``check`` value: ``[check]`` (short form, or
    one rule written with rule keys) or ``[[check]]`` (one rule per table).

    Example:
        >>> [r.label for r in rules_from_table({"distraction": {"fine-tuned": {"ci_max": 0.3}},
        ...     "claims": {"001.distraction": {"not": "contradicts"}}}, "rules.toml")]
        ['distraction.fine-tuned', 'claim 001.distraction']
    """
    if isinstance(check, list):
        if not all(isinstance(t, dict) for t in check):
            raise ConfigError(f"{where}: 'check' must be [[check]] tables, not a list of values")
        return [_rule(t, f"{where}: [[check]] #{i}") for i, t in enumerate(check, 1)]
    if not isinstance(check, dict):
        raise ConfigError(f"{where}: 'check' must be a [check] table or [[check]] tables")
    if any(k in CheckRule.model_fields or k == "not" for k, v in check.items()
           if not isinstance(v, dict)):
        return [_rule(check, f"{where}: [check]")]  # one rule written with rule keys
    return [_short(path, options, f"{where}: [check]") for path, options in _walk(check)]


def read_rules(path: str | Path) -> list[CheckRule]:
    """The rules in a TOML file's ``check`` (a study file or a rules file)."""
    from transferscope.studies.spec import read_toml

    return rules_from_table(read_toml(path, "rules file").get("check", []), str(path))


_CLI_VALUE = re.compile(r"^(?P<analysis>\w+):(?P<what>number|estimate|summary)"
                        r"(?:\.(?P<bound>lo|hi))?:(?P<glob>.+?)\s*(?P<op><=|>=)\s*"
                        r"(?P<value>[-+0-9.eE]+)$")
_CLI_SHORT = re.compile(r"^(?P<key>\w+\..+?)\s*(?P<op><=|>=)\s*(?P<value>[-+0-9.eE]+)$")
_CLI_CLAIM = re.compile(r"^(?:claim:|claims\.)(?P<claim>[\w.]+)\s*(?P<op>!=|==)\s*"
                        r"(?P<verdict>[\w ]+)$")


def parse_rule(text: str) -> CheckRule:
    """A rule from the command line: ``ANALYSIS.KEY>=X`` (the short form's key),
    ``ANALYSIS:number|estimate|summary[.lo|.hi]:GLOB<=X`` or ``claim:KEY!=VERDICT`` /
    ``claims.KEY==VERDICT``.

    Example:
        >>> parse_rule("distraction:estimate.hi:fine-tuned<=0.3").max
        0.3
        >>> parse_rule("claims.001.distraction!=contradicts").not_
        ['contradicts']
        >>> parse_rule("retained_knowledge.*M^st*>=100").path
        '*M^st*'
    """
    where, text = f"--rule {text!r}", text.strip()
    m = _CLI_CLAIM.match(text)
    if m:
        return _rule({"claim": m["claim"], ("verdict" if m["op"] == "==" else "not"):
                      [m["verdict"].strip()]}, where)
    m = _CLI_VALUE.match(text)
    if m:
        limit = {"min" if m["op"] == ">=" else "max": float(m["value"])}
        return _rule({"analysis": m["analysis"], m["what"]: m["glob"],
                      "bound": m["bound"] or "value", **limit}, where)
    m = _CLI_SHORT.match(text)
    if m:
        return _short(tuple(m["key"].split(".")), {"min" if m["op"] == ">=" else "max":
                                                   float(m["value"])}, "--rule")
    raise ConfigError(f"{where}: write ANALYSIS.KEY>=X, ANALYSIS:number:GLOB>=X, "
                      "ANALYSIS:estimate[.lo|.hi]:GLOB<=X or claim:KEY!=VERDICT")

"""Cross-model agreement (paper 000, Fig. 5-6) and lingering features (paper 001, eq. 3):
Pearson R and |L| with intervals over source classes, and the papers' claims."""

from __future__ import annotations

import json

import numpy as np
import torch

from transferscope.analyses import agreement
from transferscope.analyses import lingering_features as lingering
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import finding_of
from transferscope.stats import Verdict

from test_memory_analyses import audit  # noqa: F401  (fixture)


def _agreement(x, y, roles=("fine-tuned", "fine-tuned"), bias=True):
    iv = agreement.pearson_interval(x, y)
    what = "bias toward ants" if bias else "recall of M^st"
    return AnalysisResult("agreement", {f"samples/{what}/a vs b": {
        "r": iv.value, "r_iv": iv.to_dict(), "quantity": what, "models": ["a", "b"],
        "bias": bias, "roles": list(roles)}})


def test_agreement_r_has_an_interval_over_classes_and_a_verdict():
    rng = np.random.default_rng(0)
    shared = rng.random(200)
    x, y = shared + 0.1 * rng.normal(size=200), shared + 0.1 * rng.normal(size=200)
    x[5] = np.nan  # a class without views in one model is left out
    f = finding_of(_agreement(x, y))
    (check,) = f.checks  # the old finding tested nothing
    assert check.claim == "000.agreement" and check.verdict is Verdict.AGREES
    assert check.estimate.unit == "source class" and check.estimate.n == 199
    json.dumps(f.to_dict())
    f = finding_of(_agreement(rng.random(200), rng.random(200)))  # independent: R ~ 0
    assert f.checks[0].verdict is Verdict.CANNOT_TELL
    f = finding_of(_agreement(x, -y))
    assert f.checks[0].verdict is Verdict.CONTRADICTS
    # a fine-tuned and a from-scratch model: not what the claim is about
    assert finding_of(_agreement(x, y, roles=("fine-tuned", "scratch"))).checks == ()


def test_agreement_run_carries_intervals(audit):
    res = agreement.run(audit)
    (v,) = [v for k, v in res.summary.items() if "bias" in k]
    assert v["r_iv"]["unit"] == "source class" and v["roles"] == ["other", "other"]
    assert {"R lo", "R hi"} <= set(res.tables["pearson"].columns)


def test_lingering_count_interval_over_classes():
    ev = torch.ones(40, dtype=torch.bool)
    many = torch.zeros(40, dtype=torch.bool)
    many[:10] = True
    iv = lingering.lingering_count(many, ev)
    assert iv.value == 10 and 0 < iv.lo < 10 < iv.hi and iv.unit == "source class"
    one = torch.zeros(40, dtype=torch.bool)
    one[0] = True
    assert lingering.lingering_count(one, ev).lo == 0  # one class: could be none elsewhere

    def result(mask):
        iv = lingering.lingering_count(mask, ev)
        return AnalysisResult("lingering_features", {"p_lo": 0.01, "models": {"ft": {
            "lingering": int(mask.sum()), "evaluated_source_only": 40, "top": [],
            "lingering_iv": iv.to_dict(), "role": "fine-tuned"}}})

    assert finding_of(result(many)).checks[0].verdict is Verdict.AGREES
    assert finding_of(result(one)).checks[0].verdict is Verdict.CANNOT_TELL
    none = finding_of(result(torch.zeros(40, dtype=torch.bool)))
    assert none.checks[0].verdict is Verdict.CANNOT_TELL and none.caveat == ""


def test_lingering_run_with_one_source_only_class_says_too_few(audit):
    f = finding_of(lingering.run(audit, k=1))
    assert "too few source-only classes" in f.caveat
    assert f.estimates[0][1].n == 1 and f.checks[0].verdict is Verdict.CANNOT_TELL

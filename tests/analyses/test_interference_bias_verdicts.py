"""Interference bias (paper 000, eq. 1, Table 2): a class is strongly biased only when a
binomial test against the model's base rate says so at its number of views (BH across
classes); with too few views the finding says it cannot tell."""

from __future__ import annotations

import json

import numpy as np
import torch

from transferscope.analyses import interference_bias as bias
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import finding_of
from transferscope.stats import Verdict

from test_memory_analyses import audit  # noqa: F401  (fixture)


def _result(counts_by_model: dict, roles: dict | None = None) -> AnalysisResult:
    summary = {}
    for name, counts in counts_by_model.items():
        info, _, _ = bias.model_summary(torch.as_tensor(counts, dtype=torch.float64),
                                        ["ants", "bees"])
        info["role"] = (roles or {}).get(name, "fine-tuned")
        summary[f"samples/{name}"] = info
    return AnalysisResult("interference_bias", summary)


def test_one_view_per_class_is_never_strongly_biased():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, 1000)  # --views 1: every class has B = 1 toward some target
    counts = np.zeros((1000, 2))
    counts[np.arange(1000), target] = 1
    tests = bias.class_bias_tests(counts)
    assert not tests["tested"].any() and not tests["strong"].any()
    res = _result({"fine-tuned": counts})
    info = res.summary["samples/fine-tuned"]
    assert info["high_share"] == 1000  # what the old code called "1000 strongly biased"
    assert info["strongly_biased"] == 0 and info["tested_classes"] == 0
    f = finding_of(res)
    assert "too few views per source class to tell (1; at least 5 needed)" in f.caveat
    (check,) = f.checks
    assert check.claim == "000.bias" and check.verdict is Verdict.CANNOT_TELL
    json.dumps(f.to_dict())


def test_planted_bias_is_found_and_base_rate_classes_are_not():
    rng = np.random.default_rng(1)
    views = 20
    # 200 classes send views to ants at the base rate 0.3; 10 planted ones send all of them
    p_ants = np.r_[np.full(200, 0.3), np.full(10, 1.0)]
    ants = rng.binomial(views, p_ants)
    counts = np.stack([ants, views - ants], 1)
    tests = bias.class_bias_tests(counts)
    assert tests["tested"].all()
    assert tests["strong"][200:].all()  # every planted class
    assert tests["strong"][:200].sum() <= 2  # BH keeps false calls rare
    f = finding_of(_result({"fine-tuned": counts}))
    assert f.checks[0].verdict is Verdict.AGREES and f.caveat == ""
    assert any(label.startswith("share of tested classes strongly biased")
               and iv.unit == "source class" for label, iv in f.estimates)


def test_a_model_sending_everything_to_one_class_has_no_class_specific_bias():
    counts = np.tile([[19, 1], [20, 0], [18, 2]], (30, 1))  # base rate ~95 % ants
    res = _result({"fine-tuned": counts})
    info = res.summary["samples/fine-tuned"]
    assert info["high_share"] == 90 and info["strongly_biased"] == 0
    assert finding_of(res).checks[0].verdict is Verdict.CANNOT_TELL


def test_scratch_models_do_not_count_for_the_claim():
    rng = np.random.default_rng(2)
    ants = rng.binomial(20, np.r_[np.full(40, 0.5), np.full(5, 1.0)])
    planted = np.stack([ants, 20 - ants], 1)
    res = _result({"scratch": planted}, roles={"scratch": "scratch"})
    assert finding_of(res).checks == ()  # only a from-scratch model: claim not tested
    res = _result({"scratch": planted, "ft": planted}, roles={"scratch": "scratch"})
    assert finding_of(res).checks[0].verdict is Verdict.AGREES


def test_run_compares_models_on_the_same_classes_as_pairs(audit):
    res = bias.run(audit)
    comp = res.summary["paired_strength"]["samples: fine-tuned vs scratch"]
    assert comp["difference"]["unit"] == "source class" and comp["difference"]["n"] == 3
    assert len(res.tables["paired_strength"]) == 1
    f = finding_of(res)  # three views per class: too few to tell
    assert "too few views per source class" in f.caveat
    assert res.summary["samples/fine-tuned"]["high_share"] == 3
    assert res.summary["samples/fine-tuned"]["strongly_biased"] == 0

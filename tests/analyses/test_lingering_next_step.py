"""Lingering memories found -> the finding's next step names `transferscope remedies`; none
found (or an interval that reaches 0) -> no next step."""

from __future__ import annotations

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.lingering_features import finding
from transferscope.stats import Interval


def _result(lingering, lo):
    iv = Interval(float(lingering), lo, lingering + 3.0, "source class", 40).to_dict()
    return AnalysisResult("lingering_features", {"p_lo": 0.5, "models": {"ft": {
        "lingering": lingering, "evaluated_source_only": 40, "top": [], "lingering_iv": iv}}})


def test_found_suggests_remedies():
    f = finding(_result(12, 8.0))
    assert "`transferscope remedies --target DATA --out remedies`" in f.next_step
    assert "ft: 12 classes" in f.next_step and "remedies" in f.text


def test_none_found_or_cannot_tell_suggests_nothing():
    assert finding(_result(0, 0.0)).next_step == ""
    assert finding(_result(2, 0.0)).next_step == ""  # the interval reaches 0: not found

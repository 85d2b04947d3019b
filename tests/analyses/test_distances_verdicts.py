"""Paper 003's "two P-T models are closer in l2 than two RI-T models": the unit is an
independent pair of runs, so one pair of each kind cannot tell (issue 26)."""

from __future__ import annotations

import torch

from transferscope.analyses import distances
from transferscope.analyses._base import AnalysisResult
from transferscope.models import create_model
from transferscope.stats import Verdict


def test_one_pair_of_runs_cannot_tell():
    check = distances.distance_check({"P-T": {"P-T #1 & P-T #2": 3.0},
                                      "RI-T": {"RI-T #1 & RI-T #2": 40.0}})
    assert check.claim == "003.distance" and check.verdict is Verdict.CANNOT_TELL
    assert check.why.startswith("one pair of runs: too few independent pairs of runs")
    assert "these runs: P-T 3.000; RI-T 40.0" in check.why


def test_enough_pairs_give_a_verdict_over_pairs_of_runs():
    pt = {f"pt{i}": 3.0 + 0.1 * i for i in range(5)}
    ri = {f"ri{i}": 40.0 + i for i in range(5)}
    check = distances.distance_check({"P-T": pt, "RI-T": ri})
    assert check.verdict is Verdict.AGREES
    assert check.estimate.unit == "pair of runs" and check.estimate.n == 10
    assert distances.distance_check({"P-T": ri, "RI-T": pt}).verdict is Verdict.CONTRADICTS


def test_run_pairs_and_structured_finding():
    m = create_model("baseline_cnn", 2, image_size=32)
    states = {}
    for k in ("P-T #1", "P-T #2", "P-T #3", "RI-T #1", "RI-T #2"):
        torch.manual_seed(len(states))
        states[k] = create_model("baseline_cnn", 2, image_size=32).state_dict()
    pairs = distances.run_pairs(states, m)
    assert list(pairs["P-T"]) == ["P-T #1 & P-T #2"] and list(pairs["RI-T"]) == [
        "RI-T #1 & RI-T #2"]  # P-T #3 has no partner: no run is used twice
    res = AnalysisResult("distances", {"pairwise_total": {"P-T #1 & P-T #2": 1.0},
                                       "to_init_total": {}, "run_pairs": pairs})
    f = distances.finding(res)
    assert f.checks[0].verdict is Verdict.CANNOT_TELL and "P-T #1 & P-T #2 1" in f.text

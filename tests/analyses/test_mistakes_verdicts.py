"""Mistakes (paper 003, Sec. 3.2): pairs compared by kappa of errors and McNemar, and the P-T
pair against the RI-T pair as a paired bootstrap over the same target images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferscope.analyses import mistakes
from transferscope.analyses._registry import finding_of
from transferscope.stats import Verdict


def test_kappa_of_errors_known_answers():
    err = np.random.default_rng(0).random(400) < 0.3
    assert mistakes.error_kappa(err, err) == 1.0  # the same mistakes
    rng = np.random.default_rng(1)
    a, b = rng.random(20000) < 0.2, rng.random(20000) < 0.3
    assert abs(mistakes.error_kappa(a, b)) < 0.03  # independent errors: ~0
    assert mistakes.error_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == -1.0  # never the same image
    assert np.isnan(mistakes.error_kappa([1, 1], [1, 1]))  # both always wrong: undefined
    assert mistakes.error_kappa([1, 1], [1, 0]) == 0.0  # one always wrong: no information


def test_pair_statistics_mcnemar_and_expected_common():
    # a right on 10 images b gets wrong, b right on 2 a gets wrong, 6 both wrong, 12 both right
    a = np.array([1] * 10 + [0] * 2 + [0] * 6 + [1] * 12, bool)
    b = np.array([0] * 10 + [1] * 2 + [0] * 6 + [1] * 12, bool)
    s = mistakes.pair_statistics(a, b)
    mc = s["mcnemar"]
    assert (mc.only_a, mc.only_b, mc.both, mc.neither) == (10, 2, 12, 6)
    assert mc.p_value == pytest.approx(0.0386, abs=1e-4)  # 2 * P(X <= 2 | 12, 0.5)
    assert s["common"] == 6 and s["expected_common"] == pytest.approx(30 * (8 / 30) * (16 / 30))
    assert s["kappa"].unit == "target image" and s["kappa"].n == 30
    assert s["kappa"].lo <= s["kappa"].value <= s["kappa"].hi


def _models(seed=0, n=400):
    """P-T runs err on a shared set of hard images; RI-T runs err independently and more
    often, so the RI-T pair has MORE common mistakes in raw counts (as in the demo's 13 vs
    19) although the P-T pair shares far more than chance."""
    rng = np.random.default_rng(seed)
    y = torch.as_tensor(rng.integers(0, 3, n))
    hard = rng.random(n) < 0.15

    def model(err):
        p = y.clone()
        p[torch.as_tensor(err)] = (p[torch.as_tensor(err)] + 1) % 3
        return p

    return y, {"P-T #1": model(hard & (rng.random(n) < 0.8)),
               "P-T #2": model(hard & (rng.random(n) < 0.8)),
               "RI-T #1": model(rng.random(n) < 0.35), "RI-T #2": model(rng.random(n) < 0.35)}


def test_pt_pair_shares_more_mistakes_than_chance_despite_fewer_raw_common_ones():
    y, preds = _models()
    res = mistakes.mistake_tables({k: (p, y) for k, p in preds.items()})
    pairs = res.summary["pairs"]
    pt, rit = pairs["P-T #1 vs P-T #2"], pairs["RI-T #1 vs RI-T #2"]
    assert pt["common"] < rit["common"]  # raw counts point the wrong way
    assert pt["kappa"]["lo"] > 0.5 and rit["kappa"]["lo"] < 0 < rit["kappa"]["hi"]
    assert res.summary["pt_vs_rit"]["differs"] and res.summary["pt_vs_rit"]["difference"][
        "unit"] == "target image"
    f = finding_of(res)
    (check,) = f.checks  # the old finding tested nothing: no checks, from_html prose
    assert check.claim == "003.mistakes" and check.verdict is Verdict.AGREES
    assert "these runs" in check.why and "these runs" in f.caveat
    assert any(label.startswith("kappa of errors P-T #1 vs P-T #2") for label, _ in f.estimates)
    json.dumps(f.to_dict())
    json.dumps(res.summary)


def test_the_verdict_turns_when_the_ri_t_pair_shares_the_mistakes():
    y, preds = _models(seed=2)
    swapped = {"P-T #1": preds["RI-T #1"], "P-T #2": preds["RI-T #2"],
               "RI-T #1": preds["P-T #1"], "RI-T #2": preds["P-T #2"]}
    comp = mistakes.compare_pairs({k: (p == y).numpy() for k, p in swapped.items()})
    assert mistakes.mistakes_check(comp).verdict is Verdict.CONTRADICTS
    same = {k: (preds["P-T #1"] == y).numpy() for k in swapped}  # four copies of one model
    comp = mistakes.compare_pairs(same)
    assert comp.difference.value == 0 and mistakes.mistakes_check(comp).verdict is \
        Verdict.CANNOT_TELL


def test_without_both_pairs_there_is_no_claim_check():
    y, preds = _models(n=120)
    res = mistakes.mistake_tables({k: (preds[k], y) for k in ("P-T #1", "RI-T #1")})
    f = finding_of(res)
    assert f.checks == () and "pt_vs_rit" not in res.summary and f.estimates
    assert "two P-T and two RI-T" in f.next_step

"""Paper 003's "lower modules are less critical than higher ones" on a P-T run: a rank
correlation with depth and an exact permutation p; below the stated minimum of images (or
modules) the finding says too few to tell (issue 26)."""

from __future__ import annotations

import math

import pytest

from transferscope.analyses import criticality
from transferscope.analyses._base import AnalysisResult
from transferscope.stats import Verdict

MODS = ["stem", "b1", "b2", "b3", "b4", "head"]


def summary(scores, images=300, modules=MODS):
    return {"network_criticality/direct": float(sum(scores)), "images": images,
            "min_images": criticality.MIN_IMAGES,
            "criticality": {f"direct/{m}": s for m, s in zip(modules, scores)}}


def test_depth_trend_known_answers():
    rho, p = criticality.depth_trend([1, 2, 3, 4, 5, 6])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 720)
    rho, p = criticality.depth_trend([6, 5, 4, 3, 2, 1])
    assert rho == pytest.approx(-1.0) and p == pytest.approx(2 / 720)
    assert math.isnan(criticality.depth_trend([0.0] * 6)[0])  # RI-T at 32 images: all 0


def test_verdicts():
    up = criticality.criticality_check(summary([0.1, 0.3, 0.2, 1.0, 4.0, math.inf]))[0]
    assert up.claim == "003.criticality" and up.verdict is Verdict.AGREES
    down = criticality.criticality_check(summary([9.0, 5.0, 4.0, 1.0, 0.5, 0.1]))[0]
    assert down.verdict is Verdict.CONTRADICTS
    flat = criticality.criticality_check(summary([1.0, 3.0, 0.5, 2.0, 0.8, 1.5]))[0]
    assert flat.verdict is Verdict.CANNOT_TELL and "no clear trend" in flat.why


def test_too_few_images_or_modules_cannot_tell():
    check, caveat = criticality.criticality_check(summary([0.1, 0.3, 0.5, 1, 4, 9], images=32))
    assert check.verdict is Verdict.CANNOT_TELL
    assert caveat == "too few images to tell (32; at least 256 needed)"
    check, caveat = criticality.criticality_check(summary([0.1, 0.5, 9], modules=MODS[:3]))
    assert check.verdict is Verdict.CANNOT_TELL and caveat.startswith("too few modules")
    res = AnalysisResult("criticality", {"P-T #1": summary([0.0] * 6, images=32),
                                         "RI-T #1": summary([0.0] * 6, images=32)})
    f = criticality.finding(res)
    assert f.too_small and "too few images to tell" in f.text
    assert f.clauses == ("P-T #1 0", "RI-T #1 0") or f.clauses[0].startswith("P-T #1 0")

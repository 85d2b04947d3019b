"""The interference detector's verdicts (issue 26, items 2 and 4): intervals over background
images, calibration disjoint from evaluation, and the operating point a user meets."""

from __future__ import annotations

import numpy as np

from transferscope.analyses import interference_detector as det
from transferscope.analyses._detector_verdicts import (detector_finding, mistake_auroc,
                                                      operating_point, split_backgrounds,
                                                      useful)


def _scores(seed=0, n_bg=15):
    rng = np.random.default_rng(seed)
    clean = rng.normal(0.0, 1.0, 60)
    bg_effect = rng.normal(1.0, 1.0, n_bg)
    return clean, bg_effect


def test_repeating_backgrounds_does_not_narrow_the_auroc_interval():
    clean, bg = _scores()
    once = det.separation(clean, bg, 0.5, n_boot=400, clusters=np.arange(15))
    rep = np.tile(bg, 40) + np.random.default_rng(1).normal(0, 0.05, 600)
    again = det.separation(clean, rep, 0.5, n_boot=400, clusters=np.tile(np.arange(15), 40))
    w1 = once["auroc_ci95"][1] - once["auroc_ci95"][0]
    w40 = again["auroc_ci95"][1] - again["auroc_ci95"][0]
    assert w40 > 0.75 * w1  # over 15 background images either way
    old = det.separation(clean, rep, 0.5, n_boot=400)  # composites as the unit: too narrow
    assert old["auroc_ci95"][1] - old["auroc_ci95"][0] < 0.6 * w1


def test_calibration_and_evaluation_backgrounds_are_disjoint():
    cal, ev = split_backgrounds([3, 3, 5, 9, 9, 11, 12, 40, 41])
    assert set(cal).isdisjoint(ev) and sorted(cal + ev) == [3, 5, 9, 11, 12, 40, 41]
    assert split_backgrounds([7]) == ([], [7])  # one background: nothing to split


def test_a_flag_on_most_clean_images_is_not_a_useful_warning():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 1.0, 100)  # 93 % above p_lo
    comp = rng.uniform(0.3, 1.0, 40)
    point = operating_point(clean, comp, np.repeat(np.arange(10), 4), 0.25, n_boot=200)
    assert point["flag_rate_clean"]["value"] > 0.9 and point["flag_rate_clean"]["unit"] == \
        "target image"
    wrong = rng.random(100) < 0.3  # mistakes unrelated to the score
    mk = mistake_auroc(clean, wrong, np.arange(100), "target image", n_boot=200)
    ok, why = useful(point, mk)
    assert not ok and "flags 9" in why and "clean images" in why
    # a score that ranks the mistakes first, on few flagged clean images, is useful
    good_clean = np.where(wrong, 0.9, 0.01)
    point = operating_point(good_clean, comp, np.repeat(np.arange(10), 4), 0.5, n_boot=200)
    mk = mistake_auroc(good_clean, wrong, np.arange(100), "target image", n_boot=200)
    assert mk["value"] == 1.0 and useful({**point, "flag_rate_clean": {
        **point["flag_rate_clean"], "value": 0.05}}, mk)[0]


def test_the_finding_says_not_to_deploy_and_tests_the_claim():
    rng = np.random.default_rng(0)
    clean, comp = rng.uniform(0.2, 1.0, 100), rng.uniform(0.3, 1.0, 40)
    point = operating_point(clean, comp, np.repeat(np.arange(10), 4), 0.25, n_boot=100)
    mk = mistake_auroc(clean, rng.random(100) < 0.3, np.arange(100), "target image", n_boot=100)
    ok, why = useful(point, mk)
    summary = {"ft": {"held_out": False, "verdict": "cannot tell", "settings": {"paper": {
        "label": "paper", "p_lo": 0.25, "k": 5, "operating_point": point,
        "mistakes_clean": mk, "useful": ok, "why_not": why}}}}
    f = detector_finding(summary)
    assert "not a useful warning" in f.text and "do not deploy" in f.next_step
    assert "not held out" in f.caveat and "separates" not in f.text
    assert f.checks[0].claim == "001.detector" and f.checks[0].verdict.value != "agrees"

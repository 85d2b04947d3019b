"""Findings that compare numbers carry their 95 % intervals and say when the data cannot tell."""

from __future__ import annotations

from transferscope.analyses import get_analysis
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._stats import compare_cis, with_ci


def _finding(name, summary):
    return get_analysis(name).finding(AnalysisResult(name, summary)).text


def test_with_ci_and_compare_known_answers():
    assert with_ci(-0.001, [-0.12, 0.004], ".0f", 100, " points") == "0 points [-12, 0]"
    assert with_ci(3, [float("nan"), 4], ".0f") == "3"
    assert compare_cis({"a": (0.5, [0.4, 0.6])}) == ""  # one number: nothing to compare
    # touching intervals are not "apart"
    assert compare_cis({"a": (0.5, [0.4, 0.6]), "b": (0.3, [0.2, 0.4])}).startswith("no clear")
    assert compare_cis({"a": (0.5, [0.41, 0.6]), "b": (0.3, [0.2, 0.4])}).startswith("a is")


def test_distraction_finding_names_intervals_and_paired_difference():
    # issue 26: two models are compared as pairs on the same composites, not by whether two
    # separate intervals overlap
    from transferscope.analyses.distraction import summarise

    bg = [0, 0, 1, 1, 2, 2, 3, 3] * 2  # 8 background images: a sign-flip test can reach p<.05
    bg = bg[:8] + [b + 4 for b in bg[8:]]
    ft = [0.2, 0.25, 0.3, 0.2, 0.15, 0.2, 0.25, 0.3] * 2
    text = _finding("distraction", summarise({"ft": ft, "scratch": [x - 0.05 for x in ft]},
                                             bg))
    assert "ft 0.231 [" in text and "(95 % over 8 background images)" in text
    assert "ft is higher than scratch in distraction by +0.050 [+0.050, +0.050]" in text
    text = _finding("distraction", summarise({"ft": ft, "scratch": ft}, bg))
    assert "no clear difference between ft and scratch" in text


def test_cka_composites_occlusion_retained_findings_carry_intervals():
    from transferscope.stats import Interval

    cka_summary = {"mean_cka": {"P-T #1 & P-T #2": 0.86, "RI-T #1 & RI-T #2": 0.75},
                   "mean_cka_ci95": {"P-T #1 & P-T #2": [0.85, 0.87],
                                     "RI-T #1 & RI-T #2": [0.72, 0.77]}, "n": 90}
    text = _finding("cka", cka_summary)
    assert "0.860 [0.850, 0.870] (95 % over 90 target images)" in text
    assert "clearly higher" not in text  # issue 26: no "intervals apart" verdict any more
    diff = Interval(0.11, 0.08, 0.14, "target image", 90).to_dict()
    text = _finding("cka", {**cka_summary, "pt_vs_rit": {
        "a": "P-T #1 & P-T #2", "b": "RI-T #1 & RI-T #2", "difference": diff,
        "p_value": 0.001, "test": "paired cluster bootstrap over target images"}})
    assert "P-T #1 & P-T #2 is higher than RI-T #1 & RI-T #2 in mean CKA by +0.110" in text
    drop = {"value": 0.01, "lo": -0.1, "hi": 0.12, "unit": "background image", "n": 14}
    comp = {"models": {"m": {"clean": 0.9, "neutral": 0.7, "against": 0.69,
                             "drop_against_vs_neutral": 0.01,
                             "intervals": {"drop against vs neutral": drop}}}}
    assert ("drop against vs neutral 1 points [-10, 12] over 14 background images: no clear "
            "difference") in _finding("composites", comp)
    fixed = {"value": 86.0, "lo": 69.0, "hi": 102.0, "unit": "background image", "n": 30}
    occl = {"m": {"fixed": 86, "wrong": 125, "intervals": {"fixed": fixed}}}
    assert "m 86 [69, 102] of 125" in _finding("occlusion", occl)
    rk = {"set/m + source head (M^st)": {"classes_recall_ge_50": 357, "classes": 1000,
                                         "classes_recall_ge_50_ci95": [326.0, 387.0]}}
    assert "m 357 [326, 387] of 1000" in _finding("retained_knowledge", rk)


def test_basins_finding_says_when_no_delta_qualifies():
    text = _finding("basins", {"P-T": {"delta": 256.0, "epsilon": 0.045, "mu": 0.2},
                               "RI-T": {"delta": None, "epsilon": 0.09, "mu": 0.35}})
    assert "P-T delta 256" in text
    assert "RI-T no delta of the tested grid" in text and "cannot tell" in text
    assert "mu + 2 epsilon = 0.53" in text

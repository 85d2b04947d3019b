"""Known-answer tests of the distraction verdicts (issue 26, item 1); each failed on 5d2cc38."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from test_metric_defects import colour_audit  # noqa: F401  (fixture)
from transferscope.analyses import get_analysis
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.distraction import distraction, summarise
from transferscope.stats import Verdict

SIZE, BOX = 56, torch.tensor([[30, 30, 52, 52]])


def _hot(cells, n=1):
    m = torch.zeros(n, 7, 7)
    for r, c in cells:
        m[:, r, c] = 1.0 + r + 0.1 * c
    return m


@pytest.mark.parametrize("cells", [[(1, 1)], [(0, 0), (0, 1), (1, 0)]])
def test_identical_sparse_maps_score_one(cells):
    a = _hot(cells)
    # 5d2cc38: 0.367 (one cell), 0.496 (three): the two sides broke ties independently
    assert distraction(a, a.clone(), BOX, SIZE).item() == 1.0


def test_unrelated_sparse_maps_stay_low():
    d = distraction(_hot([(0, 0)]), _hot([(6, 0)]), BOX, SIZE).item()
    assert d < 0.3  # the shared tie order must not make their zero filler overlap


def test_a_target_map_without_background_signal_scores_zero_and_counts():
    src = _hot([(1, 1), (2, 4)], n=10)
    tgt = torch.cat([torch.zeros(8, 7, 7), src[:2].clone()])
    scores = distraction(tgt, src, BOX.expand(10, 4), SIZE)
    assert scores.tolist() == [0.0] * 8 + [1.0] * 2  # 5d2cc38: 8 NaN, dropped
    s = summarise({"m": scores.numpy()}, np.arange(10))
    iv = s["m"]["interval"]
    assert iv["value"] == pytest.approx(0.2) and iv["n"] == 10  # 5d2cc38: 1.000 over n=2
    assert iv["unit"] == "background image" and s["m"]["scored"] == 10


def test_a_source_map_without_signal_is_not_scored_but_counted_in_the_finding():
    src = torch.cat([torch.zeros(3, 7, 7), _hot([(1, 1)], n=7)])
    scores = distraction(src.clone(), src, BOX.expand(10, 4), SIZE)
    assert all(math.isnan(x) for x in scores[:3].tolist()) and (scores[3:] == 1).all()
    s = summarise({"m": scores.numpy()}, np.arange(10))
    assert s["not_scored"] == 3 and s["m"]["interval"]["n"] == 7
    f = get_analysis("distraction").finding(AnalysisResult("distraction", s))
    assert "3 of 10 composites not scored" in f.text


def _two_models(gap):
    rng = np.random.default_rng(0)
    bg = np.repeat(np.arange(12), 4)  # 12 background images x 4 composites
    base = rng.uniform(0.1, 0.4, bg.size) + 0.05 * rng.normal(size=12)[bg]
    return {"ft": base + gap, "scratch": base}, bg


def test_models_are_compared_as_pairs_over_background_images_with_the_claim():
    scores, bg = _two_models(0.1)
    s = summarise(scores, bg, fine_tuned=["ft"], scratch=["scratch"])
    d = s["claim"]["comparison"]["difference"]
    assert d["value"] == pytest.approx(0.1) and d["n"] == 12 and d["unit"] == "background image"
    assert d["lo"] == pytest.approx(0.1) and d["hi"] == pytest.approx(0.1)  # paired: no spread
    assert s["comparisons"][0]["a"] == "ft" and s["comparisons"][0]["differs"]
    f = get_analysis("distraction").finding(AnalysisResult("distraction", s))
    assert [c.claim for c in f.checks] == ["001.distraction"]
    assert f.checks[0].verdict is Verdict.AGREES and not f.caveat
    assert {label for label, _ in f.estimates} >= {"ft", "scratch", "ft minus scratch"}
    scores, bg = _two_models(-0.1)
    f = get_analysis("distraction").finding(AnalysisResult(
        "distraction", summarise(scores, bg, fine_tuned=["ft"], scratch=["scratch"])))
    assert f.checks[0].verdict is Verdict.CONTRADICTS


def test_no_claim_without_both_kinds_of_model_and_a_caveat_when_small():
    scores, bg = _two_models(0.1)
    s = summarise(scores, bg % 4, fine_tuned=["ft"])
    assert "claim" not in s
    f = get_analysis("distraction").finding(AnalysisResult("distraction", s))
    assert f.checks == () and "too few background images" in f.caveat


def test_lingering_composites_draw_an_overlay_per_composite(colour_audit):
    from transferscope.analyses.distraction import lingering_composites

    comp, _ = lingering_composites(colour_audit, per_class=6, seed=3, k=1)
    n_targets = len(colour_audit.target_data)
    distinct = len(set(comp.items[:, 1].tolist()))
    assert distinct >= min(len(comp), n_targets) / 2  # 5d2cc38: 2 overlays for 12 composites
    again, _ = lingering_composites(colour_audit, per_class=6, seed=3, k=1)
    assert torch.equal(again.items, comp.items) and again.digest == comp.digest


def test_paired_composite_sets_keep_their_pairs():
    from types import SimpleNamespace

    from transferscope.data.composite import CompositeSet

    imgs = SimpleNamespace(targets=torch.tensor([0, 1, 0, 1]), digest="x")
    pairs = [(0, 3), (1, 2), (0, 1)]
    c = CompositeSet.paired(imgs, imgs, pairs, size=16, repeats=2)
    assert c.items[:, :2].tolist() == [[0, 3], [0, 3], [1, 2], [1, 2], [0, 1], [0, 1]]
    assert c.targets.tolist() == [1, 1, 0, 0, 1, 1]
    assert c.with_transform(None).items.tolist() == c.items.tolist()
    crossed = CompositeSet(imgs, imgs, [0, 1], [1, 2, 3], size=16, repeats=2)
    assert crossed.digest != c.digest and len(crossed) == 12

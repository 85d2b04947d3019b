"""Known-answer tests for the metric defects of issue 15 (each failed on commit 7593999)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from transferscope.analyses import _stats
from transferscope.analyses.distraction import distraction, has_signal, top_fraction


def test_stats_doctests_pass():
    assert doctest.testmod(_stats).failed == 0


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    vals = np.random.default_rng(3).normal(1.0, 1.0, 200)
    lo, hi = _stats.bootstrap_ci(vals, seed=7)
    assert (lo, hi) == _stats.bootstrap_ci(vals, seed=7)
    assert lo < vals.mean() < hi and hi - lo < 0.5
    assert _stats.bootstrap_ci(vals, seed=8) != (lo, hi)
    # paired statistic: the same resampled indices drive both arrays
    a = np.arange(50.0)
    assert _stats.bootstrap_ci(lambda i: float((a[i] - a[i]).mean()), n=50) == (0.0, 0.0)


# ---------------------------------------------------------------- 1. Grad-CAM top fraction
def test_top_fraction_selects_exactly_ceil_20_percent_with_zeros_and_ties():
    keep = torch.ones(1, 10, 10, dtype=torch.bool)
    sparse = torch.zeros(1, 10, 10)
    sparse[0, 5, 5], sparse[0, 0, 9], sparse[0, 9, 0] = 3.0, 2.0, 1.0
    top = top_fraction(sparse, keep, 0.2)[0]
    assert int(top.sum()) == 20  # not the whole zero background
    assert top[5, 5] and top[0, 9] and top[9, 0]
    assert torch.equal(top, top_fraction(sparse, keep, 0.2)[0])  # deterministic
    keep[0, :, 7:] = False  # 70 kept pixels -> ceil(14.0) = 14; 23 kept -> ceil(4.6) = 5
    assert int(top_fraction(sparse, keep, 0.2)[0].sum()) == 14
    keep23 = torch.zeros(1, 10, 10, dtype=torch.bool)
    keep23.view(-1)[:23] = True
    assert int(top_fraction(torch.rand(1, 10, 10), keep23, 0.2)[0].sum()) == 5
    # index tie-break (no seed): the lowest flat indices among equal values come first
    flat = top_fraction(torch.zeros(1, 5, 5), torch.ones(1, 5, 5, dtype=torch.bool), 0.2)
    assert flat[0].flatten().nonzero().flatten().tolist() == [0, 1, 2, 3, 4]


def test_distraction_of_maps_without_signal_is_not_one():
    size, box = 10, torch.tensor([[3, 3, 7, 7]])
    zero = torch.zeros(1, size, size)
    assert math.isnan(distraction(zero, zero, box, size).item())  # was 1.0
    inside = torch.zeros(1, size, size)
    inside[0, 3:7, 3:7] = 5.0  # all mass inside the overlay: no background signal
    rand = torch.rand(1, size, size, generator=torch.Generator().manual_seed(0))
    assert math.isnan(distraction(inside, rand, box, size).item())  # was 0.2
    keep = ~torch.zeros(1, size, size, dtype=torch.bool)
    assert has_signal(torch.stack([zero[0], rand[0], torch.full((size, size), 2.0)]),
                      keep.expand(3, -1, -1)).tolist() == [False, True, False]


def test_sparse_maps_score_near_chance_not_one():
    # two maps with 3 distinct hot pixels each, elsewhere 0: the zero ties are broken
    # independently per side, so they overlap only at chance (~0.11), not 1.0
    size, box = 20, torch.tensor([[0, 0, 2, 2]])
    a, b = torch.zeros(1, size, size), torch.zeros(1, size, size)
    a[0, 10, 10:13] = 1.0
    b[0, 15, 15:18] = 1.0
    d = distraction(a, b, box, size).item()
    assert d < 0.3
    same = distraction(a, a.clone(), box, size).item()
    assert same < 0.3 and same == distraction(a, a.clone(), box, size).item()

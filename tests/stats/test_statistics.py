"""The statistics module: known answers, invariants, and simulations where the truth is
known (coverage, false differences, power)."""

from __future__ import annotations

import numpy as np
import pytest

from transferscope.stats import (auroc, benjamini_hochberg, cluster_mean, cluster_statistic,
                                 mcnemar, paired_difference, sign_flip_p, verdict_of)
from transferscope.stats.simulation import coverage, paired_rejection_rate


def test_cluster_interval_is_wider_than_the_item_interval_on_clustered_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(15), 40)  # 15 backgrounds, 40 composites each
    values = rng.normal(0, 1, 15)[labels] + rng.normal(0, 0.3, labels.size)
    by_item = cluster_mean(values)
    by_bg = cluster_mean(values, labels, unit="background image")
    assert by_item.value == pytest.approx(by_bg.value)
    assert by_bg.n == 15 and by_item.n == 600
    assert (by_bg.hi - by_bg.lo) > 3 * (by_item.hi - by_item.lo)
    # repeating the same clusters 40 times must not narrow the interval over clusters
    rep = np.tile(values, 3), np.tile(labels, 3)
    again = cluster_mean(*rep, unit="background image")
    assert again.n == 15 and (again.hi - again.lo) == pytest.approx(by_bg.hi - by_bg.lo, rel=0.1)


def test_degenerate_inputs():
    assert cluster_mean([]).n == 0 and not cluster_mean([]).finite
    one = cluster_mean([0.3, 0.5], clusters=[1, 1], unit="class")
    assert one.n == 1 and one.value == pytest.approx(0.4) and not one.finite  # cannot tell
    assert cluster_mean([np.nan, 1.0, 1.0]).n == 2
    assert cluster_mean([2.0] * 5).ci == (2.0, 2.0)
    assert verdict_of(one, ">")[0].value == "cannot tell"


def test_two_copies_of_one_model_never_differ_and_a_constant_shift_always_does():
    a = np.random.default_rng(1).random(50)
    same = paired_difference(a, a.copy(), np.arange(50) // 5, unit="class")
    assert not same.differs and same.p_value == 1.0 and same.difference.ci == (0.0, 0.0)
    shifted = paired_difference(a + 0.05, a, np.arange(50) // 5, names=("ft", "scratch"))
    assert shifted.differs and shifted.difference.value == pytest.approx(0.05)
    assert shifted.words().startswith("ft is higher than scratch by +0.050")


def test_paired_comparison_sees_what_two_overlapping_intervals_hide():
    rng = np.random.default_rng(2)
    base = rng.random(200)  # one score per composite, very spread out
    a, b = base + 0.05, base
    ia, ib = cluster_mean(a), cluster_mean(b)
    assert ia.lo < ib.hi  # separately: the intervals overlap ("no clear difference")
    assert paired_difference(a, b).differs  # paired: a difference of 0.05 [0.05, 0.05]


def test_sign_flip_is_exact_for_few_clusters():
    assert sign_flip_p([1.0, 1.0, 1.0]) == pytest.approx(2 / 8)
    assert sign_flip_p([1.0, -1.0]) == 1.0
    assert sign_flip_p([1.0, 1.0], clusters=[0, 0]) == 1.0  # one cluster: both signs equal


def test_mcnemar_and_bh_known_answers():
    r = mcnemar([1, 0, 1, 1], [1, 0, 1, 1])
    assert (r.only_a, r.only_b, r.p_value) == (0, 0, 1.0)
    r = mcnemar([1] * 10 + [0] * 2, [0] * 10 + [1] * 2)
    assert r.p_value == pytest.approx(0.03857421875)  # 2 * P(X <= 2 | n=12, p=.5)
    keep, adj = benjamini_hochberg([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205,
                                    0.212, 0.216, 0.222, 0.251, 0.269, 0.275, 0.34])
    assert keep.sum() == 1 and adj[0] == pytest.approx(0.015) and adj[1] == pytest.approx(0.06)
    keep, _ = benjamini_hochberg([np.nan, 0.0])
    assert keep.tolist() == [False, True]


def test_auroc_with_clusters_and_strata():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8])
    y = np.array([0, 0, 0, 1, 1, 1])
    iv = cluster_statistic(lambda i: auroc(x[i], y[i]), [0, 0, 1, 2, 3, 3], strata=y,
                           unit="background image")
    assert iv.value == 1.0 and iv.n == 4 and iv.lo == iv.hi == 1.0


def test_coverage_of_the_cluster_interval_is_near_95_percent():
    # 300 simulations: the binomial sd of a 95 % coverage is 1.3 points
    assert 0.915 <= coverage(300, clusters=20, per_cluster=8, n_boot=500) <= 0.985


def test_the_item_bootstrap_undercovers_clustered_data():
    assert coverage(200, clusters=20, per_cluster=8, by_cluster=False, n_boot=500) < 0.8  # theory: ~0.64


def test_false_difference_rate_and_power():
    assert paired_rejection_rate(0.0, 300, n_boot=500) <= 0.085  # nominal 0.05, sd 0.013
    assert paired_rejection_rate(0.5, 100, n_boot=500) >= 0.8


def _crossed_coverage(sims: int, rows_only: bool, n_rows=10, n_cols=30, seed=0) -> float:
    """How often the interval of the grand mean of y_ij = a_i + b_j + e_ij (rows and columns
    both random, sd 1, 1.5 and 1; the truth is 0) covers 0."""
    from transferscope.stats import crossed_statistic

    rng = np.random.default_rng(seed)
    hits = 0
    for s in range(sims):
        y = (rng.normal(size=(n_rows, 1)) + 1.5 * rng.normal(size=(1, n_cols))
             + rng.normal(size=(n_rows, n_cols)))
        if rows_only:
            means = y.mean(1)
            iv = cluster_statistic(lambda i: means[i].mean(), n_rows, n_boot=400, seed=s)
        else:
            iv = crossed_statistic(lambda r, w: float((y[r] @ w).mean() / w.sum()), n_rows,
                                   n_cols, n_boot=400, seed=s)
        hits += iv.lo <= 0 <= iv.hi
    return hits / sims


def test_the_crossed_interval_covers_when_rows_and_columns_are_both_samples():
    # theory: resampling rows only misses the columns' variance (2.25/30 of 0.178): ~86 %
    crossed, rows = _crossed_coverage(200, False), _crossed_coverage(200, True)
    assert 0.91 <= crossed <= 1.0, crossed
    assert rows < 0.9 and rows < crossed - 0.05, (rows, crossed)


def test_crossed_statistic_known_answers():
    from transferscope.stats import crossed_statistic

    y = np.tile(np.arange(5.0)[:, None], (1, 20))  # columns add nothing
    iv = crossed_statistic(lambda r, w: float((y[r] @ w).mean() / w.sum()), 5, 20,
                           unit="candidate", cols="image", n_boot=300)
    ref = cluster_statistic(lambda i: y[i, 0].mean(), 5, unit="candidate", n_boot=300)
    assert iv.value == ref.value == 2.0 and iv.n == 5 and iv.unit == "candidate"
    assert abs(iv.lo - ref.lo) < 0.3 and abs(iv.hi - ref.hi) < 0.3  # same spread (rows only)
    one = crossed_statistic(lambda r, w: 1.0, 1, 20)
    assert one.value == 1.0 and np.isnan(one.lo) and "1 item and the 20 items" in one.method

"""Claim 002.gap (a larger domain gap brings lower transferability) from the eq.-3 table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferscope.analyses import transferability_factors as tf
from transferscope.stats import Verdict


def _table(log_t, gaps, names=None):
    n = len(gaps)
    return pd.DataFrame({"target": names or [f"set{i}" for i in range(n)], "gap": gaps,
                         "width": np.linspace(1, 3, n) ** 2, "N": np.geomspace(1e3, 5e4, n),
                         "T_FB": np.exp(log_t)})


def test_gap_claim_agrees_contradicts_and_needs_four_data_sets():
    gaps = [0.5, 1.0, 1.6, 2.3, 3.0, 4.2, 6.5, 13.0]
    noise = np.array([0.1, -0.1, 0.05, -0.05, 0.1, -0.1, 0.05, 0.0])
    down = tf.finding(tf.fit_factors(_table(3 - 0.2 * np.array(gaps) + noise, gaps)))
    (check,) = down.checks
    assert check.claim == "002.gap" and check.verdict is Verdict.AGREES
    assert check.estimate.unit == "target data set" and check.estimate.n == 8
    assert check.estimate.hi < 0 and not down.caveat
    up = tf.finding(tf.fit_factors(_table(1 + 0.2 * np.array(gaps) + noise, gaps)))
    assert up.checks[0].verdict is Verdict.CONTRADICTS
    # four rows but two data sets (sweep variants move together): too few to tell
    few = _table([2.0, 1.5, 1.9, 1.4], [1.0, 2.0, 1.0, 2.0], ["a", "b", "a@0.5N", "a@2cls"])
    f = tf.finding(tf.fit_factors(few))
    assert f.checks[0].verdict is Verdict.CANNOT_TELL and f.checks[0].estimate.n == 2
    assert f.caveat.startswith("too few target data sets to tell")

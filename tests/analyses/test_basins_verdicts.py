"""Definition 3.1 as written (paper 003): epsilon = 0 lets an unchanged vicinity qualify, and
mu + 2 epsilon > 1 (error) means no delta can: *not a basin*, not "cannot tell" (issue 26,
item 5). Known answers on analytic loss landscapes over two weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferscope.analyses import basins
from transferscope.analyses._base import AnalysisResult
from transferscope.stats import Verdict

A, B = {"weight": torch.tensor([[1.0, 0.0]])}, {"weight": torch.tensor([[0.0, 1.0]])}
IMAGES = 400  # above basins.MIN_IMAGES


def on_hull(w: np.ndarray) -> bool:
    return abs(w[0] + w[1] - 1) < 1e-9 and w.min() >= -1e-9


def landscape(monkeypatch, error):
    """Replace the evaluation by ``error(w)`` of the two weights."""

    def fake(model, states, loader, **kw):
        ws = [(s() if callable(s) else s)["weight"].double().flatten().numpy() for s in states]
        e = np.array([float(error(w)) for w in ws])
        return pd.DataFrame({"point": range(len(e)), "loss": e, "accuracy": 1 - e,
                             "error": e, "n": IMAGES})
    monkeypatch.setattr(basins, "evaluate_states", fake)


def estimate(**kw):
    return basins.basin_estimates(nn.Linear(2, 1, bias=False), [A, B], None, num_samples=3,
                                  num_pairs=3, deltas=(0.01, 0.1, 1.0), seed=0, **kw)


def test_flat_landscape_epsilon_zero_meets_conditions_at_the_smallest_delta(monkeypatch):
    landscape(monkeypatch, lambda w: 0.7)  # 3 x 0.7 does not average to 0.7 in floats
    est = estimate()
    assert est["epsilon"] == 0.0
    assert est["delta"] == 0.01 and est["status"] == "basin"  # old code: NaN
    assert est["by_delta"]["satisfied"].all()


def test_mu_plus_two_epsilon_above_one_is_not_a_basin(monkeypatch):
    landscape(monkeypatch, lambda w: (1.0 if w[0] > 0.5 else 0.4) if on_hull(w) else 1.0)
    est = estimate()
    assert est["mu"] + 2 * est["epsilon"] > 1 and np.isnan(est["delta"])
    assert est["status"] == "not a basin" and "no delta" in est["why"]
    summary = {k: est[k] for k in ("mu", "epsilon", "delta", "status", "why", "images")}
    f = basins.finding(AnalysisResult("basins", {"P-T": summary}))
    (check,) = f.checks
    assert check.claim == "003.basin" and check.verdict is Verdict.CONTRADICTS
    assert "not a basin" in f.text and "cannot tell its basin" not in f.text
    assert not f.caveat


def test_grid_too_short_cannot_tell_and_a_rising_vicinity_is_a_basin(monkeypatch):
    # flat hull at 0.2 with a small bump (epsilon > 0); outside the error grows with the
    # distance from the segment, slowly: no delta up to 1 reaches 2 epsilon
    def error(w, slope):
        off = abs(w[0] + w[1] - 1) / np.sqrt(2) + max(0.0, -w.min())
        return min(1.0, 0.2 + (0.02 if w[0] > 0.5 else 0.0) + slope * off)
    landscape(monkeypatch, lambda w: error(w, 0.001))
    est = estimate()
    assert est["epsilon"] > 0 and est["status"] == "cannot tell" and np.isnan(est["delta"])
    landscape(monkeypatch, lambda w: error(w, 10.0))
    est = estimate()
    assert est["status"] == "basin" and est["delta"] in (0.01, 0.1, 1.0)


def test_finding_verdicts_and_too_few_images():
    base = {"mu": 0.2, "epsilon": 0.004, "delta": 49.0, "status": "basin", "why": "w",
            "images": 400}
    f = basins.finding(AnalysisResult("basins", {"P-T": base}))
    assert f.checks[0].verdict is Verdict.AGREES and not f.caveat
    few = basins.finding(AnalysisResult("basins", {"P-T": dict(base, images=32)}))
    assert few.checks[0].verdict is Verdict.CANNOT_TELL
    assert few.caveat.startswith("too few evaluation images to tell (32; at least 250")
    assert f.to_dict()["checks"][0]["verdict"] == "agrees"

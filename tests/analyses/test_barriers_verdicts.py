"""Paper 003's "no performance barrier between two P-T models", tested with an interval that
resamples the evaluation images (issue 26): a barrier whose interval excludes 0
contradicts, one that stays within the margin agrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transferscope.analyses import barriers
from transferscope.analyses._base import AnalysisResult
from transferscope.stats import Verdict

LAM = [0.0, 0.5, 1.0]


def path(mid: float, n: int = 60, seed: int = 0):
    """Per-image losses at lambda 0, 0.5, 1: endpoints around 1, the middle around ``mid``."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 1.5, n)
    out = []
    for m in (1.0, mid, 1.0):
        loss = base * m + rng.normal(0, 0.05, n)
        out.append((loss, loss < 1.0))
    return out


def summary(mid: float, n: int = 60) -> dict:
    items = path(mid, n)
    v = {"loss_barrier": 0.0, "margin": 0.05, "min_images": 50}
    v.update(barriers.barrier_intervals(LAM, items))
    v["loss_barrier"] = v["loss_barrier_interval"]["value"]
    return v


def test_a_clear_barrier_contradicts_and_a_flat_path_agrees():
    high = summary(3.0)
    iv = high["loss_barrier_interval"]
    assert iv["value"] == pytest.approx(2.0, abs=0.2) and iv["lo"] > 0
    assert iv["unit"] == "evaluation image" and iv["n"] == 60
    check = barriers.barrier_check("P-T #1 - P-T #2", high)
    assert check.claim == "003.barrier" and check.verdict is Verdict.CONTRADICTS
    assert "these two runs" in check.why
    flat = summary(0.9)  # the middle beats the line: no barrier
    assert flat["loss_barrier_interval"]["hi"] <= 0.05 * flat["endpoint_loss"]
    assert barriers.barrier_check("P-T #1 - P-T #2", flat).verdict is Verdict.AGREES


def test_finding_is_structured_and_too_few_images_cannot_tell():
    res = AnalysisResult("barriers", {"P-T #1 - P-T #2": summary(3.0),
                                      "RI-T #1 - RI-T #2": summary(0.9)})
    f = barriers.finding(res)
    assert [c.claim for c in f.checks] == ["003.barrier"]
    assert f.checks[0].verdict is Verdict.CONTRADICTS and not f.caveat
    assert [k for k, _ in f.estimates] == ["P-T #1 - P-T #2 loss barrier",
                                           "RI-T #1 - RI-T #2 loss barrier"]
    assert "95 % over 60 evaluation images" in f.text
    few = barriers.finding(AnalysisResult("barriers", {"P-T #1 - P-T #2": summary(3.0, 20)}))
    assert few.checks[0].verdict is Verdict.CANNOT_TELL
    assert few.caveat.startswith("too few evaluation images to tell (20; at least 50")


def test_barrier_paths_give_the_interval_of_the_reported_barrier():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(12, 3)) for _ in range(2)]
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(10, 3, 2, 2, generator=g), torch.arange(10) % 3) for _ in range(3)]
    res = barriers.barrier_paths(nets[0], {"a - b": (nets[0].state_dict(), nets[1].state_dict())},
                                 data, lambdas=LAM, channels_last=False)
    v = res.summary["a - b"]
    assert v["images"] == 30 and v["loss_barrier_interval"]["n"] == 30
    assert v["loss_barrier_interval"]["value"] == pytest.approx(v["loss_barrier"], abs=1e-9)
    assert v["accuracy_barrier_interval"]["value"] == pytest.approx(v["accuracy_barrier"])

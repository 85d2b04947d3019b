"""Transferability (paper 002): a short scratch run is named as the reason for T_SB < 1, and
the claim that the lowest layers are usually not the most transferable gets a verdict."""

from __future__ import annotations

import pytest
import torch

from transferscope.analyses import transferability as tr
from transferscope.findings import Finding
from transferscope.models import create_model
from transferscope.stats import Verdict


@pytest.fixture(scope="module")
def runs():
    torch.manual_seed(0)
    model = create_model("baseline_cnn", 3, image_size=32)
    theta_r = {k: v.clone() for k, v in model.state_dict().items()}
    other = lambda: {k: v.clone() for k, v in create_model(  # noqa: E731
        "baseline_cnn", 3, image_size=32).state_dict().items()}
    theta_a = other()
    theta_a.update({k: v for k, v in theta_r.items() if k.startswith("head")})  # shared head
    solution = other()

    def towards(start, end, f):
        return {k: s + f * (end[k] - s) if s.is_floating_point() else s
                for k, s in start.items()}

    fine_tuned = towards(theta_a, solution, 0.3)
    return model, theta_a, theta_r, fine_tuned, towards(theta_r, solution, 0.05), solution


def _finding(res) -> Finding:
    return tr.finding(tr.transferability_result({res.summary["label"]: res}))


def test_short_scratch_run_is_named_in_the_caveat(runs):
    model, theta_a, theta_r, fine_tuned, short, _ = runs
    res = tr.network_transferability(model, theta_a, theta_r, fine_tuned, short, label="toy")
    assert res.summary["T_SB"] < 1                     # like the demo's 0.059
    sc = res.summary["scratch"]
    assert sc["short"] and sc["ratio"] < 0.5 and sc["short_layers"] == sc["layers"] > 0
    f = _finding(res)
    assert "T_SB < 1 here says the scratch run is short, not that pre-training hurts" in f.caveat
    assert f.too_small and "1.83-6.94" in f.caveat and f.next_step


def test_long_scratch_run_has_no_caveat(runs):
    model, theta_a, theta_r, fine_tuned, _, solution = runs
    res = tr.network_transferability(model, theta_a, theta_r, fine_tuned, solution, label="toy")
    assert not res.summary["scratch"]["short"] and res.summary["T_SB"] > 0.5
    assert _finding(res).caveat == ""


def test_lower_layers_claim_with_one_target_cannot_tell_beyond_these_runs(runs):
    model, theta_a, theta_r, fine_tuned, short, _ = runs
    res = tr.network_transferability(model, theta_a, theta_r, fine_tuned, short, label="toy")
    (check,) = _finding(res).checks
    assert check.claim == "002.lower_layers" and check.verdict is Verdict.CANNOT_TELL
    assert "cannot tell beyond these runs" in check.why and check.estimate.n == 1
    low = res.summary["lowest"]
    assert low["first"] == tr.layer_transferability(theta_a, fine_tuned, theta_r,
                                                    model)["layer"].iloc[0]


def _summary(first_is_max):
    return {"T_FB": 2.0, "T_SB": 2.0, "lowest": {"first": "conv1", "T_first": 1.0,
                                                 "T_max": 1.0 if first_is_max else 3.0,
                                                 "max_layer": "conv1" if first_is_max else "b3",
                                                 "first_is_max": first_is_max}}


def test_lower_layers_claim_over_target_tasks():
    twelve = {f"set{i}": _summary(False) for i in range(12)}
    check = tr.lower_layers_check(twelve)
    assert check.verdict is Verdict.AGREES and check.estimate.n == 12
    assert check.estimate.lo > 0.5 and check.estimate.unit == "target task"
    four = {f"set{i}": _summary(False) for i in range(4)}
    assert tr.lower_layers_check(four).verdict is Verdict.CANNOT_TELL  # 4 of 4: [0.40, 1]
    against = {f"set{i}": _summary(True) for i in range(12)}
    assert tr.lower_layers_check(against).verdict is Verdict.CONTRADICTS
    # sweep variants of one data set are not separate target tasks
    assert tr.lower_layers_check({**four, "set0@0.5N": _summary(False)}).estimate.n == 4

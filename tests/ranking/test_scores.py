"""Each transferability score equals its reference implementation on fixed, seeded inputs
(relative difference <= 1e-6), and known answers hold.

REFERENCE was printed by ``python tests/ranking/record_reference.py`` (see its docstring)
from:
  thuml/LogME @ 56551ca94a3295bcc37e6a01b1291911af985f07: LogME.py (LogME(regression=False)
      .fit, i.e. _fit_fixed_point), LEEP.py (LEEP), NCE.py (NCE);
  thuml/Transfer-Learning-Library @ b0d863f20511e60fbc6f5491f37faf2765451cf7:
      tllib/ranking/hscore.py (h_score, regularized_h_score with sklearn 1.9.1 LedoitWolf);
  google-research/google-research @ 1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31:
      stable_transfer/transferability/gbc.py (get_gbc_score; its TensorFlow ops run as numpy).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferscope.ranking import scores

# -- fixed, seeded inputs (record_reference.py loads these too) ----------------------------

def case(name: str) -> dict[str, np.ndarray]:
    """``features (N, D)``, ``labels (N,)``, ``probs (N, Cs)`` (source-head probabilities) and
    ``source_pred (N,)`` of one named case, float64, from numpy's PCG64 (same on every
    platform)."""
    n, d, c, cs, shift, seed = CASES[name]
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    rng.shuffle(labels)
    centres = rng.normal(size=(c, d))
    features = rng.normal(size=(n, d)) + shift * centres[labels]
    # a source head whose classes partly follow the target classes
    logits = rng.normal(size=(n, cs)) * 1.5
    logits[np.arange(n), labels * (cs // c)] += 2.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return {"features": features, "labels": labels, "probs": probs,
            "source_pred": probs.argmax(1)}


#: name -> (N, D, classes, source classes, class-mean shift, seed)
CASES = {
    "n_gt_d": (120, 16, 4, 12, 0.8, 0),    # the usual regime: more images than features
    "n_lt_d": (40, 64, 3, 9, 0.5, 1),      # fewer images than features (LogME's other SVD)
    "many": (300, 32, 10, 30, 0.4, 2),     # ten classes, weakly separated
}


REFERENCE = {
    'n_gt_d': {'logme': -0.2571232074200357, 'leep': -1.1089718752476614, 'nce': -0.95445170951868, 'hscore_reg': 1.9423024071989097, 'gbc': -0.7938869830897577, 'gbc_spherical': -1.0297496439322464, 'hscore': 2.1882059476456064},  # noqa: E501
    'n_lt_d': {'logme': 1.2853653988729283, 'leep': -0.7549603734683406, 'nce': -0.6309757396797879, 'hscore_reg': 1.2166111301001936, 'gbc': -0.008246934395506115, 'gbc_spherical': -0.05062220325722506},  # noqa: E501
    'many': {'logme': -0.15320024552742242, 'leep': -2.018827058685765, 'nce': -1.5183666850896806, 'hscore_reg': 1.5996571609951271, 'gbc': -14.91370517400274, 'gbc_spherical': -18.861957419901184, 'hscore': 3.4994326266178772},  # noqa: E501
}

OURS = {
    "logme": lambda c: scores.logme(c["features"], c["labels"]),
    "leep": lambda c: scores.leep(c["probs"], c["labels"]),
    "nce": lambda c: scores.nce(c["source_pred"], c["labels"]),
    "hscore": lambda c: scores.hscore(c["features"], c["labels"]),
    "hscore_reg": lambda c: scores.hscore_regularised(c["features"], c["labels"]),
    "gbc": lambda c: scores.gbc(c["features"], c["labels"]),
    "gbc_spherical": lambda c: scores.gbc(c["features"], c["labels"], "spherical"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_equals_reference(name):
    c = case(name)
    worst = 0.0
    for score, expected in REFERENCE[name].items():
        got = OURS[score](c)
        rel = abs(got - expected) / max(abs(expected), 1e-12)
        assert rel <= 1e-6, f"{score} on {name}: {got!r} vs reference {expected!r}"
        worst = max(worst, rel)
    print(f"{name}: largest relative difference {worst:.2e}")


def test_inputs_as_torch_float32_give_the_same_score_as_numpy():
    c = case("n_gt_d")
    f32 = torch.as_tensor(c["features"], dtype=torch.float32)
    assert scores.logme(f32, torch.as_tensor(c["labels"])) == pytest.approx(
        scores.logme(f32.numpy(), c["labels"]), rel=1e-12)


def test_ledoit_wolf_equals_sklearn():
    sk = pytest.importorskip("sklearn.covariance")
    for name in CASES:
        f = case(name)["features"]
        cov, a = scores.ledoit_wolf(f)
        ref_cov, ref_a = sk.ledoit_wolf(f)
        assert a == pytest.approx(ref_a, rel=1e-9)
        np.testing.assert_allclose(cov.numpy(), ref_cov, rtol=1e-9, atol=1e-12)


# -- known answers ------------------------------------------------------------------------

def test_nce_is_zero_when_the_source_prediction_determines_the_label():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    z = np.array([3, 5, 1, 1, 0, 4, 4])  # each source class maps to one target class
    assert scores.nce(z, y) == pytest.approx(0.0, abs=1e-12)


def test_nce_is_minus_log_c_when_the_source_prediction_says_nothing():
    y = np.tile([0, 1, 2, 3], 5)
    assert scores.nce(np.zeros(20, dtype=int), y) == pytest.approx(-math.log(4), rel=1e-12)


def test_leep_is_zero_for_a_source_head_that_predicts_the_labels_for_sure():
    y = np.array([0, 1, 1, 0, 2])
    probs = np.eye(3)[[2, 0, 0, 2, 1]]  # source class = a relabelling of the target class
    assert scores.leep(probs, y) == pytest.approx(0.0, abs=1e-12)


def test_leep_of_an_uninformative_head_is_log_of_class_frequency():
    y = np.array([0, 0, 0, 1])
    probs = np.full((4, 5), 0.2)
    expected = np.mean(np.log([0.75, 0.75, 0.75, 0.25]))
    assert scores.leep(probs, y) == pytest.approx(expected, rel=1e-12)


def test_hscore_of_one_dimension_is_between_over_total_variance():
    y = np.array([0, 0, 1, 1])
    f = np.array([[0.0], [1.0], [3.0], [4.0]])  # within variance 0.25*4, between 1.5^2*4
    # cov(f) = sum((f-2)^2)/3 = 10/3; cov(E[f|y]) = (4 * 1.5^2)/3 = 3
    assert scores.hscore(f, y) == pytest.approx(3 / (10 / 3), rel=1e-12)


def test_separable_features_rank_above_random_ones_on_every_feature_score():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 30)
    good = rng.normal(size=(120, 24)) + 8 * np.eye(4, 24)[y]
    bad = rng.normal(size=(120, 24))
    for name, fn in scores.FEATURE_SCORES.items():
        assert fn(good, y) > fn(bad, y), name
    assert scores.knn_accuracy(good, y) == 1.0
    assert scores.knn_accuracy(bad, y) < 0.5


def test_gbc_is_zero_for_classes_that_do_not_overlap():
    y = np.repeat([0, 1], 10)
    f = np.random.default_rng(0).normal(size=(20, 3)) * 0.01 + 100 * y[:, None]
    assert scores.gbc(f, y) == pytest.approx(0.0, abs=1e-12)


def test_nan_features_are_refused_in_one_line():
    f = np.ones((4, 2))
    f[2, 1] = np.nan
    with pytest.raises(ValueError, match="features of 1 of 4 samples are NaN"):
        scores.logme(f, [0, 1, 0, 1])


def test_logme_costs_one_decomposition_not_one_per_class(monkeypatch):
    """All classes at once: one eigendecomposition for 2 or 100 classes (the reference
    decomposes once per class); counted, not timed (a timed test fails on a busy machine)."""
    rng = np.random.default_rng(0)
    calls = []
    real = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a, *k, **kw: calls.append(a.shape)
                        or real(a, *k, **kw))
    for n, d in ((1000, 256), (100, 256)):  # both branches: D x D and N x N Gram matrices
        f = torch.as_tensor(rng.normal(size=(n, d)), dtype=torch.float32)
        for c in (2, 100):
            calls.clear()
            y = torch.as_tensor(np.arange(n) % c)
            value = scores.logme(f, y)
            assert len(calls) == 1 and calls[0] == (min(n, d),) * 2, (n, d, c, calls)
            assert np.isfinite(value)


def test_hscore_saturates_at_c_minus_1_when_n_le_d_and_the_shrinkage_one_does_not():
    """Known answer of the degenerate regime (N <= D, e.g. 244 images, 1280 features): any
    features give the plain H-score C - 1, so it cannot rank; the shrinkage H-score still
    ranks separable features above random ones."""
    rng = np.random.default_rng(3)
    y = np.arange(60) % 3
    noise = rng.normal(size=(60, 100))
    separable = noise + 3 * np.eye(3, 100)[y]
    assert scores.hscore(noise, y) == pytest.approx(2.0, rel=1e-9)
    assert scores.hscore(separable, y) == pytest.approx(2.0, rel=1e-9)
    assert scores.hscore_regularised(separable, y) > scores.hscore_regularised(noise, y)


@pytest.mark.parametrize("n,d,dupes", [(40, 200, 0), (30, 64, 10), (80, 20, 5)])
def test_hscore_regularised_equals_the_d_by_d_formula_for_rank_deficient_features(n, d, dupes):
    """Known answer from the formula itself (pinv of the (D, D) Ledoit-Wolf covariance, as
    the reference computes it) on ReLU-like features with repeated rows, where centring
    leaves x x^T singular: a wrong basis vector for its null direction gave 1e273 (seen on
    efficientnet_lite0 features of hymenoptera)."""
    rng = np.random.default_rng(n + d)
    y = np.arange(n) % 3
    f = np.maximum(rng.normal(size=(n, d)) + np.eye(3, d)[y], 0)
    f[n - dupes:] = f[:dupes]
    cov, a = scores.ledoit_wolf(f)
    x = f - f.mean(0)
    g = np.stack([x[y == c].mean(0) for c in range(3)])[y]
    expected = np.trace(np.linalg.pinv(cov.numpy(), rcond=1e-15) @ ((1 - a) * np.cov(g.T)))
    assert scores.hscore_regularised(f, y) == pytest.approx(expected, rel=1e-6)

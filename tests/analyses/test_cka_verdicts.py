"""CKA (paper 003): Kornblith's reference value, the debiased estimator, paper 003's setting
(flattened maps from Gram matrices), intervals over target images and the paired P-T vs RI-T
comparison that gives the verdict on claim 003.cka."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from transferscope.analyses import cka
from transferscope.analyses._registry import validate_options
from transferscope.stats import Verdict


def _kornblith():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


def _feature_space_debiased(x, y):
    """Kornblith et al.'s feature_space_linear_cka(debiased=True), written out."""
    x, y = x - x.mean(0), y - y.mean(0)
    n = x.shape[0]

    # debiased dot-product similarity needs the row-wise terms as in the reference
    def ds(a, b):
        dot = np.linalg.norm(a.T @ b) ** 2
        sa, sb = (a * a).sum(1), (b * b).sum(1)
        return dot - n / (n - 2) * (sa @ sb) + sa.sum() * sb.sum() / ((n - 1) * (n - 2))

    return ds(x, y) / np.sqrt(ds(x, x) * ds(y, y))


def test_kornblith_reference_and_debiased_estimator():
    x, y = _kornblith()
    assert round(cka.linear_cka(torch.tensor(x), torch.tensor(y)), 5) == 0.55761
    assert round(cka.gram_cka(x @ x.T, y @ y.T), 5) == 0.55761
    deb = cka.gram_cka(x @ x.T, y @ y.T, estimator="debiased")
    assert deb == pytest.approx(_feature_space_debiased(x, y), rel=1e-9) and deb < 0.55761
    # unrelated wide features, few images: the plug-in CKA is far from 0, the debiased is not
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 2000)), rng.normal(size=(30, 2000))
    assert cka.gram_cka(a @ a.T, b @ b.T) > 0.5
    assert abs(cka.gram_cka(a @ a.T, b @ b.T, estimator="debiased")) < 0.05


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))


def _nudged(model, scale, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def models():
    return {"P-T #1": _nudged(_net(0), 0.01, 1), "P-T #2": _nudged(_net(0), 0.01, 2),
            "RI-T #1": _net(3), "RI-T #2": _net(4)}


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(10, 3, 12, 12, generator=g) for _ in range(6)]


def test_intervals_over_images_and_paired_claim(models, images):
    pairs = [("P-T #1", "P-T #2"), ("RI-T #1", "RI-T #2")]
    res = cka.cka_tables(models, images, pairs, layers=["0", "2"], pool="avg", n_boot=200)
    s = res.summary
    iv = s["mean_cka_interval"]["P-T #1 & P-T #2"]
    assert iv["unit"] == "target image" and iv["n"] == 60 and iv["lo"] <= iv["value"] <= iv["hi"]
    comp = s["pt_vs_rit"]
    assert comp["difference"]["unit"] == "target image" and comp["difference"]["lo"] > 0
    assert comp["difference"]["value"] == pytest.approx(
        s["mean_cka"]["P-T #1 & P-T #2"] - s["mean_cka"]["RI-T #1 & RI-T #2"])
    f = cka.finding(res)
    (check,) = f.checks
    assert check.claim == "003.cka" and check.verdict is Verdict.AGREES
    assert "about these runs" in check.why and "paired" in check.test
    assert "is higher than" in f.text and "target images" in f.text
    # two copies of one pair: the paired difference is exactly 0 -> cannot tell
    same = cka.cka_tables({"P-T #1": models["P-T #1"], "P-T #2": models["P-T #2"],
                           "RI-T #1": models["P-T #1"], "RI-T #2": models["P-T #2"]},
                          images, pairs, layers=["0", "2"], pool="avg", n_boot=100)
    assert cka.finding(same).checks[0].verdict is Verdict.CANNOT_TELL


def test_paper003_setting_flattens_maps_from_gram_matrices(models, images):
    assert validate_options("cka", {"setting": "paper003"}).setting == "paper003"
    pairs = [("P-T #1", "RI-T #1")]
    with pytest.raises(Exception, match="max_features"):  # 8*12*12 = 1152 features
        cka.streaming_cka(models, images, pairs, ["2"], pool="flatten", max_features=1000)
    res = cka.cka_tables(models, images, pairs, layers=["2"], pool="flatten", via_gram=True,
                         max_images=40, n_boot=0, max_features=1000)
    full = torch.cat(images)[:40]
    with torch.no_grad():
        fa, fb = models["P-T #1"](full), models["RI-T #1"](full)
    assert res.summary["cka"]["P-T #1 & RI-T #1"]["2"] == pytest.approx(
        cka.linear_cka(fa, fb), abs=1e-6)  # float32 maps, other batching
    deb = cka.cka_tables(models, images, pairs, layers=["2"], pool="flatten",
                         estimator="debiased", max_images=40, n_boot=0)
    assert deb.summary["estimator"] == "debiased"
    assert deb.summary["cka"]["P-T #1 & RI-T #1"]["2"] == pytest.approx(cka.gram_cka(
        (fa.flatten(1) @ fa.flatten(1).T).double().numpy(),
        (fb.flatten(1) @ fb.flatten(1).T).double().numpy(), estimator="debiased"), abs=1e-6)

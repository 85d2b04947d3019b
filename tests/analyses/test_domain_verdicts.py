"""Domain gap (paper 002): a target's gap does not depend on the other targets; paper 002's
scale (raw features, linear-kernel MMD) with Table 2 beside it."""

from __future__ import annotations

import numpy as np
import pytest

from transferscope.analyses import domain


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    from conftest import make_folder

    from transferscope.data import image_folder

    tmp = tmp_path_factory.mktemp("domain")
    near = image_folder(make_folder(tmp / "near", per_class=4, seed=1))
    far = image_folder(make_folder(tmp / "far", classes=("x", "y", "z"), per_class=3, seed=2,
                                   size=(24, 48)))
    src = image_folder(make_folder(tmp / "src", classes=("a", "b", "c"), per_class=4, seed=3))
    return near, far, src


def test_adding_a_target_leaves_the_first_targets_gap_unchanged(sets):
    near, far, src = sets
    alone = domain.domain_statistics({"near": near}, src, size=32, levels=16)
    both = domain.domain_statistics({"near": near, "far": far}, src, size=32, levels=16)
    # the bandwidth pooled over the targets moved this gap when "far" joined
    assert both.summary["near"]["gap"] == pytest.approx(alone.summary["near"]["gap"], rel=1e-12)
    assert both.summary["near"]["bandwidth"] == alone.summary["near"]["bandwidth"]
    s = domain.dataset_features(src, size=32, levels=16)
    h = domain.median_bandwidth(domain.standardize(s, s)[1])
    assert alone.summary["near"]["bandwidth"] == pytest.approx(h)  # source sample alone
    x = np.random.default_rng(0).normal(size=(30, 3))
    g, h = domain.pooled_gaps({"a": x + 0.3, "b": x + 1.0, "c": x + 3.0}, x)
    assert g["a"] < g["b"] < g["c"] and h == domain.median_bandwidth(x)
    assert domain.pooled_gaps({"a": x + 0.3}, x)[0]["a"] == g["a"]


def test_paper002_scale_raw_features_linear_mmd_and_table2(sets):
    near, far, src = sets
    res = domain.domain_statistics({"near": near, "far": far}, src, size=32, scale="paper002")
    s = domain.dataset_features(src, size=32, levels=32)   # 32 grey levels on this scale
    t = domain.dataset_features(near, size=32, levels=32)
    assert res.summary["near"]["gap"] == pytest.approx(        # MMD (not squared), linear kernel
        float(np.sqrt(((t.mean(0) - s.mean(0)) ** 2).sum())), rel=1e-12)
    assert res.summary["near"]["width"] == pytest.approx(domain.domain_width(t), rel=1e-12)
    assert domain.linear_mmd([[0.0, 0.0], [2.0, 0.0]], [[1.0, 3.0]]) == pytest.approx(3.0)
    table = res.tables["domains"]
    paper = table[table["from"] == domain.PAPER_ROW]
    assert len(paper) == 12 and paper["gap"].min() == 0.47 and paper["gap"].max() == 13.12
    assert paper["width"].min() == 46.9 and paper["width"].max() == 823.2
    assert "POCUS (paper 002)" in set(paper["target"])
    assert set(res.summary) == {"near", "far"}              # only measured targets
    f = domain.finding(res)
    assert "0.47-13.12" in f.text and "46.9-823.2" in f.text
    default = domain.finding(domain.domain_statistics({"near": near}, src, size=32))
    assert "not on the scale of paper 002" in default.text
    assert len(domain.domain_statistics({"near": near}, src, size=32).tables["domains"]) == 1
    with pytest.raises(Exception, match="scale"):
        domain.domain_statistics({"near": near}, src, scale="nope")

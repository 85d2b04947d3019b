"""rank_candidates: a row per candidate and a column per score from one cached forward pass
each; head scores skipped with a reason without a source head; a bad candidate leaves the
others ranked; a one-class target is refused. check_ranking: tau and r with intervals over
candidates, "too few candidates to tell" below 5."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_folder
from transferscope.data import ImageSet, image_folder
from transferscope.errors import DataError
from transferscope.models import create_model
from transferscope.ranking import SCORES, check_ranking, rank_candidates


def _cnn(seed: int, init: str = "random"):
    torch.manual_seed(seed)
    m = create_model("baseline_cnn", num_classes=10, image_size=32)
    m.builder["init"] = init  # "pretrained": its head counts as a source head
    return m


@pytest.fixture
def target(tmp_path):
    return image_folder(make_folder(tmp_path / "t", classes=("a", "b", "c"), per_class=5))


def test_a_row_per_candidate_a_column_per_score_head_scores_need_a_source_head(target):
    errors = []
    table = rank_candidates(target, {"random": lambda: _cnn(0), "pre": lambda: _cnn(1, "x.pt"),
                                     "broken": lambda: create_model("no_such_arch")},
                            on_error=lambda name, why: errors.append((name, why)))
    assert list(table.index[-1:]) == ["broken"] and set(table.index) == {"random", "pre",
                                                                         "broken"}
    assert [c for c in table.columns if c in SCORES] == list(SCORES)
    for name in ("random", "pre"):
        for s in ("logme", "hscore", "hscore_reg", "gbc", "knn"):
            assert math.isfinite(table.loc[name, s]), (name, s)
        assert table.loc[name, "n"] == 15 and table.loc[name, "width"] > 0
    assert math.isfinite(table.loc["pre", "leep"]) and math.isfinite(table.loc["pre", "nce"])
    assert math.isnan(table.loc["random", "leep"]) and math.isnan(table.loc["random", "nce"])
    assert "leep, nce: random weights: no trained source head" in table.loc["random", "skipped"]
    # the bad candidate: one line naming why, its scores NaN, the others ranked
    assert len(errors) == 1 and errors[0][0] == "broken" and "\n" not in errors[0][1]
    assert "no_such_arch" in table.loc["broken", "error"]
    assert table.loc["broken", list(SCORES)].isna().all()


def test_features_come_from_the_cache_on_a_second_ranking(target):
    first = rank_candidates(target, {"m": _cnn(0)})
    again = rank_candidates(target, {"m": _cnn(0)})
    assert not first.loc["m", "cached"] and again.loc["m", "cached"]
    pd.testing.assert_series_equal(first.loc["m", list(SCORES)], again.loc["m", list(SCORES)])


def test_a_random_weight_candidate_is_the_same_model_on_every_run(target):
    def build():
        return create_model("baseline_cnn", num_classes=10, image_size=32)

    first = rank_candidates(target, {"r": build})
    again = rank_candidates(target, {"r": build})
    assert again.loc["r", "cached"] and first.loc["r", "logme"] == again.loc["r", "logme"]


def test_nan_features_skip_the_feature_scores_with_the_reason(target):
    m = _cnn(0)
    with torch.no_grad():
        next(m.backbone.parameters()).fill_(float("nan"))
    row = rank_candidates(target, {"nan": m}).loc["nan"]
    assert row[["logme", "hscore", "gbc", "knn"]].isna().all()
    assert "logme: features of 15 of 15 samples are NaN or infinite" in row["skipped"]


def test_a_one_class_target_is_refused_in_one_line(tmp_path):
    one = image_folder(make_folder(tmp_path / "one", classes=("only",), per_class=3))
    with pytest.raises(DataError, match="at least two classes") as err:
        rank_candidates(one, {"m": _cnn(0)})
    assert "\n" not in str(err.value)


def test_check_ranking_agrees_disagrees_and_says_when_there_are_too_few():
    names = [f"m{i}" for i in range(7)]
    acc = dict(zip(names, np.linspace(0.5, 0.95, 7)))
    table = pd.DataFrame({"logme": np.linspace(-1, 1, 7), "gbc": np.linspace(1, -1, 7),
                          "leep": [math.nan] * 7}, index=names)
    out = check_ranking(table, acc).set_index("score")
    assert out.loc["logme", "tau_w"] == pytest.approx(1.0)
    assert out.loc["logme", "r"] == pytest.approx(1.0)
    assert out.loc["gbc", "tau_w"] == pytest.approx(-1.0)
    assert out.loc["logme", "n"] == 7 and out.loc["logme", "note"] == ""
    assert out.loc["logme", "tau_interval"]["unit"] == "candidate"
    assert out.loc["leep", "n"] == 0
    few = check_ranking(table.iloc[:4], acc).set_index("score")
    assert few.loc["logme", "note"] == "too few candidates to tell (4; at least 5 needed)"


def test_check_ranking_interval_is_wide_for_noise():
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(8)]
    table = pd.DataFrame({"logme": rng.normal(size=8)}, index=names)
    row = check_ranking(table, dict(zip(names, rng.normal(size=8)))).iloc[0]
    assert row.tau_lo < 0 < row.tau_hi and row.r_lo < 0 < row.r_hi


def test_check_ranking_does_not_depend_on_the_order_accuracies_are_listed():
    rng = np.random.default_rng(1)
    names = [f"m{i}" for i in range(7)]
    table = pd.DataFrame({"logme": rng.normal(size=7)}, index=names)
    acc = dict(zip(names, rng.uniform(size=7)))
    a = check_ranking(table, acc, n_boot=200).iloc[0]
    b = check_ranking(table, dict(reversed(list(acc.items()))), n_boot=200).iloc[0]
    assert (a.tau_lo, a.tau_hi, a.r_lo, a.r_hi) == (b.tau_lo, b.tau_hi, b.r_lo, b.r_hi)


def test_candidates_that_preprocess_alike_decode_the_target_once(target, monkeypatch):
    from transferscope.data.image_set import ImageSet
    from transferscope.engine import predict
    from transferscope.engine.cache import ResultCache
    from transferscope.ranking.scores import logme

    decoded = []
    real = ImageSet.__getitem__
    monkeypatch.setattr(ImageSet, "__getitem__",
                        lambda self, i: decoded.append(i) or real(self, i))
    models = {f"m{i}": _cnn(i) for i in range(3)}
    table = rank_candidates(target, models, cache=ResultCache(enabled=False))
    # one size probe + one pass over the 15 images, not three passes
    assert len(decoded) == 1 + len(target)
    for name, m in models.items():  # the same features as each candidate's own pass
        own = predict(m, target, cache=ResultCache(enabled=False), with_features=True)
        assert table.loc[name, "logme"] == pytest.approx(
            logme(own.activations["features"], own.labels), rel=1e-6)


def test_decode_once_decodes_per_pass_above_its_memory_budget(target):
    from transferscope.data.transforms import IMAGENET_NORM, eval_transform
    from transferscope.engine.loading import decode_once

    tf, other = eval_transform(IMAGENET_NORM, 16), eval_transform(IMAGENET_NORM, 24)
    once = decode_once(target, progress=False)
    a = once.with_transform(tf)
    assert once.with_transform(tf) is a and len(a) == len(target)
    assert torch.equal(a[7][0], target.with_transform(tf)[7][0]) and a[7][1] == target[7][1]
    b = once.with_transform(other)  # two preprocessings fit: both held
    assert once.with_transform(tf) is a and once.with_transform(other) is b
    small = decode_once(target, max_bytes=3 * 16 * 16 * 4 * len(target), progress=False)
    small.with_transform(tf)
    small.with_transform(other)  # does not fit: read per pass, held set untouched
    assert isinstance(small.with_transform(other), ImageSet) and len(small.memo) == 1
    tiny = decode_once(target, max_bytes=100, progress=False)
    assert isinstance(tiny.with_transform(tf), ImageSet) and not tiny.memo


def test_a_score_flat_to_rounding_has_no_r_and_no_warning():
    import warnings

    t = pd.DataFrame({"hscore": [1.0, 1.0 + 2e-14, 1.0 - 1e-15, 1.0, 1.0 + 1e-14]},
                     index=list("abcde"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's NearConstantInputWarning would fail here
        row = check_ranking(t, dict(zip("abcde", [0.9, 0.8, 0.7, 0.6, 0.5])),
                            scores=["hscore"], n_boot=200).iloc[0]
    assert math.isnan(row.r) and math.isnan(row.r_lo)


def test_per_image_results_put_each_accuracys_noise_into_the_interval():
    """Six candidates whose score orders their accuracies: with 400 validation images the
    accuracies are sure and the crossed interval is about the candidates-only one; with 12
    images they are noise and it widens. Point values are the same either way."""
    rng = np.random.default_rng(0)
    names = list("abcdef")
    table = pd.DataFrame({"logme": np.arange(6.0)[::-1]}, index=names)
    truth = dict(zip(names, [0.9, 0.85, 0.8, 0.75, 0.7, 0.65]))
    widths = {}
    for m in (400, 12):
        correct = {c: rng.random(m) < p for c, p in truth.items()}
        acc = {c: float(v.mean()) for c, v in correct.items()}
        plain = check_ranking(table, acc, scores=["logme"], n_boot=500).iloc[0]
        both = check_ranking(table, acc, correct=correct, scores=["logme"], n_boot=500).iloc[0]
        assert plain.resampled == "candidates"
        assert both.resampled == "candidates and validation images"
        assert both.tau_w == pytest.approx(plain.tau_w) and both.r == pytest.approx(plain.r)
        assert "validation image" in both.tau_interval["method"]
        widths[m] = (plain.r_hi - plain.r_lo, both.r_hi - both.r_lo)
    assert widths[400][1] < widths[400][0] + 0.25          # sure accuracies: about the same
    assert widths[12][1] > widths[12][0] + 0.1 or widths[12][1] > 1.0  # noisy ones: wider


def test_per_image_results_for_only_some_candidates_fall_back_to_candidates():
    table = pd.DataFrame({"logme": [3.0, 2.0, 1.0]}, index=list("abc"))
    acc = {"a": 0.9, "b": 0.8, "c": 0.7}
    part = {"a": np.ones(5, bool), "b": np.ones(5, bool)}  # c's came from [accuracy]
    row = check_ranking(table, acc, correct=part, scores=["logme"], n_boot=100).iloc[0]
    assert row.resampled == "candidates"
    uneven = {"a": np.ones(5, bool), "b": np.ones(5, bool), "c": np.ones(4, bool)}
    assert check_ranking(table, acc, correct=uneven, scores=["logme"],
                         n_boot=100).iloc[0].resampled == "candidates"
    other = {c: np.arange(10) < 10 * a for c, a in acc.items()}  # means 0.9, 0.8, 0.7
    assert check_ranking(table, acc, correct=other, scores=["logme"],
                         n_boot=100).iloc[0].resampled == "candidates and validation images"
    other["c"] = np.arange(10) < 5  # its mean is not c's accuracy: not the same images
    assert check_ranking(table, acc, correct=other, scores=["logme"],
                         n_boot=100).iloc[0].resampled == "candidates"

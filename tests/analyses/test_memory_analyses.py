"""Known-answer tests of the source-memory analyses (papers 000/001) on hand-built models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_folder, write_image
from transferscope.analyses import interference_bias as bias
from transferscope.analyses import interference_detector as detector
from transferscope.analyses import lingering_features as lingering
from transferscope.analyses import retained_knowledge as retained
from transferscope.analyses._stats import auroc
from transferscope.analyses.context import AuditContext
from transferscope.data import IMAGENET_NORM, image_folder, source_images
from transferscope.data.views import ViewSet
from transferscope.engine import ResultCache
from transferscope.errors import ConfigError, ModelError
from transferscope.models import wrap_module

RED, GREEN, BLUE = (200, 40, 40), (40, 200, 40), (40, 40, 200)
WNIDS = ["n01440764", "n01443537", "n01484850"]  # source classes 0, 1, 2


def colour_model(out: int, weight: torch.Tensor, bias_value: float = 0.0):
    """Backbone = mean colour per channel (3 features); head = the given linear map."""
    lin = nn.Linear(3, out)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.fill_(bias_value)
        lin.weight[: weight.shape[0]] = weight
        lin.bias[: weight.shape[0]] = 0.0
    return wrap_module(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin), head="2",
                       default_size=16, norm=IMAGENET_NORM).eval()


@pytest.fixture
def audit(tmp_path):
    src_dir = tmp_path / "source"
    for c, (wnid, rgb) in enumerate(zip(WNIDS, (RED, GREEN, BLUE))):
        for i in range(3):
            write_image(src_dir / f"{wnid}_{i}.JPEG", rgb)
    make_folder(tmp_path / "target", per_class=4)  # ants red, bees blue
    source = colour_model(1000, 10 * torch.eye(3), bias_value=-100.0)  # M^s: argmax channel
    tuned = colour_model(2, 10 * torch.tensor([[1.0, 0, 0], [0, 1, 1]]))  # ants iff red wins
    scratch = colour_model(2, torch.tensor([[0.0, 0, 0], [0, 0, 0]]))  # always class 0 (ties)
    ctx = AuditContext(source, {"fine-tuned": tuned, "scratch": scratch},
                       image_folder(tmp_path / "target"),
                       {"samples": source_images(src_dir)}, image_size=16,
                       cache=ResultCache(tmp_path / "cache"))
    return ctx


def test_per_class_recall_and_bins():
    rec = retained.per_class_recall(torch.tensor([0, 1, 1, 1, 2, 2]),
                                    torch.tensor([0, 0, 1, 1, 2, 2]), 4)
    assert rec[:3].tolist() == [0.5, 1.0, 1.0] and math.isnan(rec[3])
    r = torch.tensor([0.0, 0.5, 0.50001, 0.6, 0.69, 0.7, 0.8, 0.9, 1.0, float("nan")])
    assert retained.recall_bins(r) == [1, 2, 2, 1, 1, 2]  # 0.5 is in [50,60[


def test_bias_matrix_bins_and_strength():
    b = bias.bias_matrix(torch.tensor([0, 0, 0, 1, 1, 1, 0]), torch.tensor([0, 0, 0, 0, 1, 1, 2]),
                         4, 2)
    assert b[0].tolist() == [0.75, 0.25] and b[1].tolist() == [0.0, 1.0]
    assert b[2].tolist() == [1.0, 0.0] and b[3].isnan().all()
    assert bias.two_class_bins(torch.tensor([0.0, 0.19, 0.2, 0.4, 0.59, 0.6, 0.8, 1.0])) == \
        [2, 1, 2, 1, 2]
    assert bias.bias_strength(torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])).tolist() == \
        [0.0, 1.0, 0.5]


def test_votes_source_only_and_lingering():
    logits = torch.tensor([[5.0, 4, 0, 0], [5, 0, 4, 0], [0, 5, 4, 0]])
    votes = lingering.source_votes(logits, k=2)
    assert votes.tolist() == [2, 2, 2, 0]
    only = lingering.source_only(votes, v_lo=0)
    assert only.tolist() == [False, False, False, True]
    probs = torch.tensor([[0.1, 0, 0, 0.9], [0.5, 0, 0, 0.5], [0.9, 0.1, 0, 0]])
    mean = lingering.class_mean_prob(probs, torch.tensor([3, 3, 0]))
    assert mean[3].item() == pytest.approx(0.7) and mean[0].item() == pytest.approx(0.9)
    assert lingering.lingering(mean, only, 0.5).tolist() == [False, False, False, True]
    assert lingering.lingering(mean, only, 0.8).tolist() == [False] * 4


def test_auroc_equals_pair_counting():
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 5, 40).astype(float), rng.random(40) < 0.4
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0)
             for a, b in itertools.product(s[y], s[~y])]
    assert auroc(s, y) == pytest.approx(np.mean(pairs))
    assert math.isnan(auroc(s, np.zeros(40, bool)))


def test_audit_on_hand_built_models(audit):
    res = retained.run(audit)
    per = res.tables["per_class"]
    assert set(per["recall"]) == {1.0}  # backbones are identical colour means: M^st == M^s
    assert res.summary["samples/source custom (M^s)"]["classes"] == 3

    b = bias.run(audit)
    tbl = b.tables["per_class"].set_index(["model", "class"])
    assert tbl.loc[("fine-tuned", 0), "B[ants]"] == 1.0  # red source class -> ants
    assert tbl.loc[("fine-tuned", 1), "B[bees]"] == 1.0  # green -> bees
    assert tbl.loc[("fine-tuned", 2), "B[bees]"] == 1.0  # blue -> bees
    assert tbl.loc[("scratch", 1), "B[ants]"] == 1.0
    row = b.tables["table"].set_index("model").loc["fine-tuned"]
    assert row["high ants bias"] == 1 and row["high bees bias"] == 2 and row["neutral"] == 0
    assert b.summary["samples/fine-tuned"]["toward"] == {"ants": 1, "bees": 2}

    lg = lingering.run(audit, k=1)
    t = lg.tables["per_class"]
    assert t.loc[0, "v(c) custom"] == 4 and t.loc[2, "v(c) custom"] == 4
    assert t.loc[1, "v(c) custom"] == 0
    assert t["lingering (fine-tuned)"].sum() == 1 and bool(t.loc[1, "lingering (fine-tuned)"])
    assert lg.summary["models"]["fine-tuned"]["top"][0]["class"] == 1


def test_detector_flags_lingering_inputs(audit):
    det = detector.build(audit, "fine-tuned", k=1)
    assert det.classes.tolist() == [1]
    x = torch.zeros(3, 3, 16, 16)
    x[0, 0], x[1, 1], x[2, 2] = 2.0, 2.0, 2.0  # red, green, blue after normalisation
    assert det.flag(x).tolist() == [False, True, False]
    res = detector.run(audit, k=1)
    row = res.tables["evaluation"].iloc[0]
    assert row["images"] == 8 and row["mistakes"] == 0


def test_every_analysis_reuses_the_shared_forward_passes(audit):
    # every colour model has the same parameter-free backbone (mean colour), so all of them
    # share one backbone pass per data set; only the heads differ
    retained.run(audit)  # M^s and M^st(fine-tuned) on the source images
    assert audit.cache.misses == 1
    retained.run(audit)
    bias.run(audit)  # fine-tuned and scratch on the source images: the same backbone pass
    assert audit.cache.misses == 1
    lingering.run(audit, k=1)  # + M^s and M^st(fine-tuned) on the target images: one pass
    lingering.run(audit, k=1)
    # fine-tuned and M^st on the target images again; + one backbone pass on the composites
    detector.run(audit, k=1, calibrate_setting=False)
    assert audit.cache.misses == 3
    detector.run(audit, k=1, calibrate_setting=False)
    assert audit.cache.misses == 3
    audit.targets["scratch"].prune_features([])  # a feature mask: another backbone hash
    bias.run(audit)
    assert audit.cache.misses == 4


def test_context_rejects_mismatched_heads_and_unlabelled_sources(audit, tmp_path):
    wrong = colour_model(5, torch.zeros(1, 3))
    with pytest.raises(ModelError, match="5 outputs"):
        AuditContext(audit.source, {"x": wrong}, audit.target_data, audit.source_data)
    with pytest.raises(ConfigError, match="source_images"):
        AuditContext(audit.source, audit.targets, audit.target_data,
                     {"target": audit.target_data})


def test_views_are_deterministic_and_counted(audit):
    base = audit.source_data["samples"]
    views = ViewSet(base, n_views=4, seed=3)
    assert len(views) == 4 * len(base) and views.targets.tolist()[:4] == [0, 0, 0, 0]
    a, b = views.load_image(1), ViewSet(base, n_views=4, seed=3).load_image(1)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert views.digest != ViewSet(base, n_views=4, seed=4).digest
    assert np.array_equal(np.asarray(views.load_image(0)), np.asarray(base.load_image(0)))


def test_composite_geometry_is_in_bounds_sized_and_seeded(audit):
    from transferscope.data.composite import PAPER000_SIDE, CompositeSet

    src, tgt = audit.source_data["samples"], audit.target_data
    comp = CompositeSet(src, tgt, [0, 4], [0, 5], size=40, side_fraction=PAPER000_SIDE,
                        repeats=3, seed=7)
    assert len(comp) == 2 * 2 * 3
    side = comp.boxes[:, 2] - comp.boxes[:, 0]
    assert (side == round(PAPER000_SIDE * 40)).all() and (side == comp.boxes[:, 3] - comp.boxes[:, 1]).all()
    assert (comp.boxes[:, :2] >= 0).all() and (comp.boxes[:, 2:] <= 40).all()
    assert abs(side[0].item() ** 2 / 40 ** 2 - 0.1) < 0.01  # about 10% of the area
    again = CompositeSet(src, tgt, [0, 4], [0, 5], size=40, side_fraction=PAPER000_SIDE,
                         repeats=3, seed=7)
    assert torch.equal(comp.boxes, again.boxes) and comp.digest == again.digest
    other = CompositeSet(src, tgt, [0, 4], [0, 5], size=40, side_fraction=PAPER000_SIDE,
                         repeats=3, seed=8)
    assert not torch.equal(comp.boxes, other.boxes) and comp.digest != other.digest
    img = np.asarray(comp.load_image(5))
    x0, y0, x1, y1 = comp.boxes[5].tolist()
    overlay = np.asarray(tgt.load_image(int(comp.items[5, 1])).resize((x1 - x0, y1 - y0)))
    assert np.abs(img[y0:y1, x0:x1].astype(int) - overlay.astype(int)).mean() < 12
    assert comp.targets.tolist()[:3] == [0, 0, 0] and comp.targets.tolist()[3] == 1
    occluded = np.asarray(comp.load_image(5, occlude_background=True))
    assert (occluded[:y0, :] == 127).all() and (occluded[y1:, :] == 127).all()


def test_composites_and_occlusion_on_hand_built_models(audit):
    from transferscope.analyses import composites, occlusion

    res = composites.run(audit, n_biased=1, n_neutral=1, overlays_per_class=2, repeats=2,
                         style="paper001")
    acc = res.tables["accuracy"].set_index("model")
    # the fine-tuned colour model reads the mean colour: 40% overlays never flip it, so its
    # accuracy on composites is that of the background's own class
    assert acc.loc["fine-tuned", "clean target accuracy"] == 1.0
    assert 0.0 <= acc.loc["fine-tuned", "all composites"] <= 1.0
    per_bg = res.tables["per_background"]
    assert set(per_bg["group"]) <= {"biased toward ants", "biased toward bees", "neutral"}
    against = per_bg[(per_bg["group"] == "biased toward bees") & (per_bg["pasted class"] == "ants")]
    assert (against["fine-tuned"] == 0.0).all()  # green/blue background beats a red overlay
    occ = occlusion.run(audit, n_biased=1, n_neutral=1, overlays_per_class=2, repeats=2)
    row = occ.tables["fixes"].set_index(["model", "background"]).loc[("fine-tuned", "all")]
    assert 0 < row["fixed by occlusion"] <= row["wrong with background"]
    assert row["wrong with background"] == round((1 - acc.loc["fine-tuned", "all composites"])
                                                 * res.summary["composites"])


def test_composite_backgrounds_by_the_mean_bias_of_several_models(audit):
    from transferscope.analyses import composites

    one = {name: composites.plan(audit, n_biased=1, n_neutral=1, reference=name).bias
           for name in ("fine-tuned", "scratch")}
    both = composites.plan(audit, n_biased=1, n_neutral=1, reference=["fine-tuned", "scratch"])
    assert torch.allclose(both.bias, (one["fine-tuned"] + one["scratch"]) / 2, equal_nan=True)
    assert both.reference == "mean of fine-tuned, scratch"
    # known answer: scratch sends everything to ants (0), fine-tuned sends red to ants and
    # green/blue to bees, so the mean bias toward bees is 0 for red and 0.5 for green/blue
    assert both.bias[:3, 1].tolist() == [0.0, 0.5, 0.5]
    with pytest.raises(ConfigError, match="not a target model"):
        composites.plan(audit, reference="nope")

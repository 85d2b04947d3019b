"""Known-answer tests for the metric defects of issue 15 (each failed on commit 7593999)."""

from __future__ import annotations

import copy
import doctest
import math

import numpy as np
import pytest
import pandas as pd
import torch

from transferscope.analyses import _stats
from transferscope.analyses.distraction import distraction, has_signal, top_fraction


@pytest.mark.parametrize("module", ["_stats", "distraction", "interference_detector",
                                    "retained_knowledge", "domain", "composites", "occlusion",
                                    "cka", "_weights"])
def test_doctests_of_the_metric_modules_pass(module):
    import importlib

    mod = importlib.import_module(f"transferscope.analyses.{module}")
    res = doctest.testmod(mod)
    assert res.failed == 0 and res.attempted > 0


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    vals = np.random.default_rng(3).normal(1.0, 1.0, 200)
    lo, hi = _stats.bootstrap_ci(vals, seed=7)
    assert (lo, hi) == _stats.bootstrap_ci(vals, seed=7)
    assert lo < vals.mean() < hi and hi - lo < 0.5
    assert _stats.bootstrap_ci(vals, seed=8) != (lo, hi)
    # paired statistic: the same resampled indices drive both arrays
    a = np.arange(50.0)
    assert _stats.bootstrap_ci(lambda i: float((a[i] - a[i]).mean()), n=50) == (0.0, 0.0)


# ---------------------------------------------------------------- 1. Grad-CAM top fraction
def test_top_fraction_selects_exactly_ceil_20_percent_with_zeros_and_ties():
    keep = torch.ones(1, 10, 10, dtype=torch.bool)
    sparse = torch.zeros(1, 10, 10)
    sparse[0, 5, 5], sparse[0, 0, 9], sparse[0, 9, 0] = 3.0, 2.0, 1.0
    top = top_fraction(sparse, keep, 0.2)[0]
    assert int(top.sum()) == 20  # not the whole zero background
    assert top[5, 5] and top[0, 9] and top[9, 0]
    assert torch.equal(top, top_fraction(sparse, keep, 0.2)[0])  # deterministic
    keep[0, :, 7:] = False  # 70 kept pixels -> ceil(14.0) = 14; 23 kept -> ceil(4.6) = 5
    assert int(top_fraction(sparse, keep, 0.2)[0].sum()) == 14
    keep23 = torch.zeros(1, 10, 10, dtype=torch.bool)
    keep23.view(-1)[:23] = True
    assert int(top_fraction(torch.rand(1, 10, 10), keep23, 0.2)[0].sum()) == 5
    # index tie-break (no seed): the lowest flat indices among equal values come first
    flat = top_fraction(torch.zeros(1, 5, 5), torch.ones(1, 5, 5, dtype=torch.bool), 0.2)
    assert flat[0].flatten().nonzero().flatten().tolist() == [0, 1, 2, 3, 4]


def test_distraction_of_maps_without_signal_is_not_one():
    size, box = 10, torch.tensor([[3, 3, 7, 7]])
    zero = torch.zeros(1, size, size)
    assert math.isnan(distraction(zero, zero, box, size).item())  # was 1.0
    inside = torch.zeros(1, size, size)
    inside[0, 3:7, 3:7] = 5.0  # all mass inside the overlay: no background signal
    rand = torch.rand(1, size, size, generator=torch.Generator().manual_seed(0))
    # a target map without background signal: not distracted, scores 0 (issue 26; was NaN)
    assert distraction(inside, rand, box, size).item() == 0.0  # was 0.2 before issue 15
    keep = ~torch.zeros(1, size, size, dtype=torch.bool)
    assert has_signal(torch.stack([zero[0], rand[0], torch.full((size, size), 2.0)]),
                      keep.expand(3, -1, -1)).tolist() == [False, True, False]


def test_sparse_maps_score_near_chance_not_one():
    # two maps with 3 distinct hot pixels each, elsewhere 0: the zero ties are filled nearest
    # each map's own mass, so unrelated maps overlap little, and identical maps score 1
    # (issue 26: independent tie-breaks per side scored a map against itself < 0.3)
    size, box = 20, torch.tensor([[0, 0, 2, 2]])
    a, b = torch.zeros(1, size, size), torch.zeros(1, size, size)
    a[0, 10, 10:13] = 1.0
    b[0, 15, 15:18] = 1.0
    d = distraction(a, b, box, size).item()
    assert d < 0.3
    assert distraction(a, a.clone(), box, size).item() == 1.0


# ------------------------------------------------------- 2. extrapolation with BatchNorm
def _bn_net(seed: int, var: float):
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[1].running_var.fill_(var)
        net[1].running_mean.uniform_(-0.1, 0.1)
    return net


def _batches(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 2, (8,), generator=g))
            for _ in range(n)]


def test_extrapolated_batchnorm_models_give_finite_losses():
    from transferscope.analyses import barriers

    a, b = _bn_net(0, 0.1), _bn_net(1, 1.0)  # linear running_var at lambda=-1: 0.2 - 1 < 0
    loader = _batches()
    for batched in (True, False):
        fn = barriers.evaluate_path_batched if batched else barriers.evaluate_path
        df = fn(a, a.state_dict(), b.state_dict(), [-1.0, 0.0, 1.0, 2.0], loader)
        assert np.isfinite(df["loss"]).all(), df  # NaN on 7593999
        # BatchNorm present: statistics re-estimated at every lambda by default
        ref = fn(a, a.state_dict(), b.state_dict(), [-1.0, 0.0, 1.0, 2.0], loader,
                 bn_reestimate_loader=loader)
        assert np.allclose(df["loss"], ref["loss"], rtol=1e-5)
    # without re-estimation the combined variance still never goes negative
    st = barriers.combine([a.state_dict(), b.state_dict()], [2.0, -1.0])
    assert (st["1.running_var"] > 0).all()
    off = barriers.evaluate_path_batched(a, a.state_dict(), b.state_dict(), [-1.0, 2.0], loader,
                                         bn_reestimate=False)
    assert np.isfinite(off["loss"]).all()


def test_non_finite_logits_raise_instead_of_being_scored():
    from transferscope.analyses import barriers, basins
    from transferscope.errors import ModelError

    a = _bn_net(0, 1.0)
    bad = {k: v.clone() for k, v in a.state_dict().items()}
    bad["5.weight"][0, 0] = float("nan")
    with pytest.raises(ModelError, match="not finite"):
        barriers.evaluate_states(a, [a.state_dict(), bad], _batches(), bn_reestimate=False)
    with pytest.raises(ModelError, match="not finite"):
        basins.basin_estimates(a, [a.state_dict(), bad], _batches(1), num_samples=2,
                               num_pairs=1, deltas=(1.0,))


# ------------------------------------------------------------------ 5. Table 1 recall bins
def test_recall_bins_put_exactly_one_half_into_50_60():
    from transferscope.analyses import retained_knowledge as retained

    assert retained.RECALL_BINS[:2] == ["<50", "[50,60["]
    rec = torch.tensor([0.5, 0.4999, 0.6, 1.0, 0.0], dtype=torch.float64)
    bins = retained.recall_bins(rec)
    assert dict(zip(retained.RECALL_BINS, bins)) == {
        "<50": 2, "[50,60[": 1, "[60,70[": 1, "[70,80[": 0, "[80,90[": 0, "[90,100]": 1}
    assert retained.recall_bins(rec.float()) == bins  # float32 recalls bin the same way
    # the paper's count of classes with recall >= 50 % is All minus the first bin
    assert sum(bins[1:]) == int((rec >= 0.5).sum()) == 3


def test_recall_intervals_bracket_the_counts():
    from transferscope.analyses import retained_knowledge as retained

    rec = torch.tensor([0.0, 0.2, 0.5, 0.55, 0.6, 0.9, 1.0, 1.0, 0.45, 0.7] * 5,
                       dtype=torch.float64)
    out = retained.recall_intervals(rec)
    bins = dict(zip(retained.RECALL_BINS, retained.recall_bins(rec)))
    assert out["n"] == 50
    lo, hi = out["mean_recall_ci95"]
    assert lo <= float(rec.mean()) <= hi
    for b, (lo, hi) in out["bins_ci95"].items():
        assert lo <= bins[b] <= hi
    lo, hi = out["classes_recall_ge_50_ci95"]
    assert lo <= sum(list(bins.values())[1:]) <= hi and hi - lo > 0
    assert out == retained.recall_intervals(rec)  # seeded


# ------------------------------------------------------------------ 4. block shuffle
def test_block_shuffled_training_is_deterministic_without_crops_or_flips():
    from PIL import Image

    from transferscope.engine import training
    from transferscope.models.base import Normalization

    norm = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    tf_train, tf_val = training.training_transforms(norm, 32, augment=True, block_shuffle=4,
                                                    seed=3)
    torch.manual_seed(0)
    first = tf_train(img)
    assert all(torch.equal(first, tf_train(img)) for _ in range(5))  # no random crop/flip
    assert torch.equal(first, tf_val(img))  # the same permutation as validation
    plain = training.training_transforms(norm, 32, augment=False)[1](img)
    assert not torch.equal(first, plain)  # the shuffle is applied
    assert torch.equal(first.flatten().sort().values, plain.flatten().sort().values)
    # without block shuffling the recipe's augmentation is kept
    aug = training.training_transforms(norm, 32, augment=True)[0]
    assert any(not torch.equal(aug(img), aug(img)) for _ in range(5))


# ------------------------------------------------------------------ 3. detector (eq. 5)
@pytest.fixture
def colour_audit(tmp_path):
    """test_memory_analyses' hand-built audit plus a training split whose images are green
    (so v(c) on it makes classes 0 and 2 source-only, while the red/blue validation images
    would make class 1 source-only)."""
    from conftest import make_folder, write_image
    from test_memory_analyses import BLUE, GREEN, RED, WNIDS, colour_model

    from transferscope.analyses.context import AuditContext
    from transferscope.data import image_folder, source_images
    from transferscope.engine import ResultCache

    src_dir = tmp_path / "source"
    for wnid, rgb in zip(WNIDS, (RED, GREEN, BLUE)):
        for i in range(3):
            write_image(src_dir / f"{wnid}_{i}.JPEG", rgb)
    make_folder(tmp_path / "target", per_class=4)
    for c in ("ants", "bees"):
        for i in range(4):
            write_image(tmp_path / "train" / c / f"{c}_{i}.jpg", (40, 200 - 5 * i, 40))
    source = colour_model(1000, 10 * torch.eye(3), bias_value=-100.0)
    tuned = colour_model(2, 10 * torch.tensor([[1.0, 0, 0], [0, 1, 1]]))
    return AuditContext(source, {"fine-tuned": tuned}, image_folder(tmp_path / "target"),
                        {"samples": source_images(src_dir)}, image_size=16,
                        cache=ResultCache(tmp_path / "cache"),
                        target_train_data=image_folder(tmp_path / "train"))


def test_detector_counts_votes_on_the_training_split(colour_audit):
    from transferscope.analyses import interference_detector as detector

    det = detector.build(colour_audit, "fine-tuned", k=1)
    assert det.classes.tolist() == [0, 2]  # 7593999 counted v(c) on validation: [1]
    val = detector.build(colour_audit, "fine-tuned", k=1, votes_data=colour_audit.target_data)
    assert val.classes.tolist() == [1]


def test_detector_with_empty_lingering_set_is_nan_with_a_reason():
    from transferscope.analyses import interference_detector as detector

    empty = detector.InterferenceDetector(None, torch.tensor([], dtype=torch.long), 0.01)
    scores = empty.score_logits(torch.randn(4, 10))
    assert scores.isnan().all()  # 7593999: zeros, scored as AUROC 0.5
    sep = detector.separation(scores.numpy(), scores.numpy(), 0.01)
    assert math.isnan(sep["auroc"]) and "L is empty" in sep["reason"] and not sep["separates"]
    assert detector.verdict(sep).startswith("cannot be scored")


def test_detector_separation_known_answers_and_interval():
    from transferscope.analyses import interference_detector as detector

    rng = np.random.default_rng(0)
    clean, comp = rng.uniform(0, 0.4, 60), rng.uniform(0.3, 1.0, 40)
    sep = detector.separation(clean, comp, 0.35, seed=1, n_boot=300)
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in comp for b in clean])
    assert sep["auroc"] == pytest.approx(pairs)
    lo, hi = sep["auroc_ci95"]
    assert lo < sep["auroc"] < hi and lo > 0.5 and sep["separates"]
    assert sep["youden_j"] == pytest.approx((comp > 0.35).mean() - (clean > 0.35).mean())
    same = detector.separation(clean[:40], clean[20:], 0.35, seed=1, n_boot=300)
    assert same["auroc_ci95"][0] < 0.5 < same["auroc_ci95"][1] and not same["separates"]
    assert "does not separate" in detector.verdict(same)
    assert sep == detector.separation(clean, comp, 0.35, seed=1, n_boot=300)


def test_detector_run_reports_paper_and_calibrated_settings(colour_audit):
    from transferscope.analyses import interference_detector as detector

    res = detector.run(colour_audit, k=1, n_boot=200)
    entry = res.summary["fine-tuned"]
    assert entry["held_out"] and set(entry["settings"]) == {"paper", "calibrated"}
    assert entry["verdict"] in ("separates", "does not separate")
    assert "setting" in entry["verdict_text"] and entry["calibration_grid"]
    cal = entry["settings"]["calibrated"]
    grid = pd.DataFrame(entry["calibration_grid"])
    best = grid.loc[grid["youden_j"].idxmax()]
    assert (cal["k"], cal["p_lo"]) == (int(best["k"]), pytest.approx(best["p_lo"]))
    assert {"auroc", "auroc_ci95", "n_clean", "n_composites"} <= set(cal)
    assert set(res.tables["separation"]["setting"]) == {"paper", "calibrated"}


# ------------------------------------------------------- 6. distraction protocol (paper 001)
def test_distraction_composites_come_from_the_lingering_set(colour_audit):
    from transferscope.analyses import distraction

    comp, info = distraction.lingering_composites(colour_audit, per_class=6, seed=3, k=1)
    assert info["lingering_classes"] == 2 and info["classes_used"] == 2
    assert set(comp.background_labels.tolist()) == {0, 2}  # L of the training split
    per_class = torch.bincount(comp.background_labels, minlength=3)
    assert per_class[0] == per_class[2] == 6 and per_class[1] == 0  # 3 images x 2 overlays
    again, _ = distraction.lingering_composites(colour_audit, per_class=6, seed=3, k=1)
    assert torch.equal(again.items, comp.items) and torch.equal(again.boxes, comp.boxes)
    other, _ = distraction.lingering_composites(colour_audit, per_class=6, seed=4, k=1)
    assert not torch.equal(other.boxes, comp.boxes)
    few, info = distraction.lingering_composites(colour_audit, per_class=6, max_classes=1, k=1)
    assert info["classes_used"] == 1 and len(set(few.background_labels.tolist())) == 1
    with pytest.raises(Exception, match="protocol"):
        distraction.run(colour_audit, protocol="nope")


# ------------------------------------------------------------------ 7. domain gap bandwidth
def test_domain_gaps_of_several_targets_share_one_bandwidth(tmp_path):
    from conftest import make_folder

    from transferscope.analyses import domain
    from transferscope.data import image_folder

    near = image_folder(make_folder(tmp_path / "near", per_class=4, seed=1))
    far = image_folder(make_folder(tmp_path / "far", classes=("x", "y", "z"), per_class=3,
                                   seed=2, size=(24, 48)))
    src = image_folder(make_folder(tmp_path / "src", classes=("a", "b", "c"), per_class=4,
                                   seed=3))
    res = domain.domain_statistics({"near": near, "far": far}, src, size=32, levels=16)
    h = {k: v["bandwidth"] for k, v in res.summary.items()}
    assert h["near"] == h["far"]  # 7593999: a median heuristic per target
    s = domain.dataset_features(src, size=32, levels=16)
    zs = {k: domain.standardize(domain.dataset_features(d, size=32, levels=16), s)[0]
          for k, d in (("near", near), ("far", far))}
    sz = domain.standardize(s, s)[1]
    shared = domain.median_bandwidth(sz)  # issue 26: set by the source sample alone
    assert h["near"] == pytest.approx(shared)
    for k in zs:  # each gap is the MMD^2 at the shared bandwidth
        assert res.summary[k]["gap"] == pytest.approx(domain.mmd(zs[k], sz, shared))
    # with one bandwidth, moving a target further from the source raises its gap
    x = np.random.default_rng(0).normal(size=(30, 3))
    g, _ = domain.pooled_gaps({"a": x + 0.3, "b": x + 1.0, "c": x + 3.0}, x)
    assert g["a"] < g["b"] < g["c"]


# ------------------------------------------------------------------ 8. module criticality
def _crit_setup():
    from torch import nn

    torch.manual_seed(0)
    init = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))
    trained = copy.deepcopy(init)
    g = torch.Generator().manual_seed(1)
    y = torch.arange(24) % 3
    x = torch.randn(24, 3, 6, 6, generator=g) * 0.5
    x[torch.arange(24), y] += 1.5
    opt = torch.optim.SGD(trained.parameters(), lr=0.3)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(trained(x), y).backward()
        opt.step()
    return init.eval(), trained.eval(), [(x[:12], y[:12]), (x[12:], y[12:])]


def test_criticality_uses_the_loss_and_matches_a_direct_computation():
    from transferscope.analyses import criticality
    from transferscope.analyses._weights import seed_of as _seed

    init, trained, data = _crit_setup()
    mods = {"conv": ["0.weight", "0.bias"], "fc": ["4.weight", "4.bias"]}
    alphas, sigmas, draws = [0.0, 0.5, 1.0], [0.0, 0.1, 0.3], 3
    res = criticality.criticality_scores(trained, init.state_dict(), trained.state_dict(), data, modules=mods,
                          alphas=alphas, sigmas=sigmas, samples=draws, seed=5, tolerance=0.1)
    assert res.summary["metric"] == "loss"  # Definition 3.2: L_S, not the 0-1 error
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    tf, t0 = trained.state_dict(), init.state_dict()
    with torch.no_grad():
        base = float(torch.nn.functional.cross_entropy(trained(x), y))
        eps = base + 0.1
        assert res.summary["epsilon"] == pytest.approx(eps)
        for mi, (mod, names) in enumerate(mods.items()):
            d2 = sum(float((tf[n].double() - t0[n].double()).square().sum()) for n in names)
            best = math.inf
            for ai, a in enumerate(alphas):
                for si, s in enumerate(sigmas):
                    losses = []
                    for draw in range(draws if s > 0 else 1):
                        st = dict(tf)
                        g = torch.Generator().manual_seed(_seed(5, mi, ai, si, draw))
                        for n in names:
                            t = ((1 - a) * t0[n].double() + a * tf[n].double())
                            if s > 0:
                                sc = float(tf[n].double().norm()) / math.sqrt(tf[n].numel())
                                t = t + s * sc * torch.randn(t.shape, generator=g,
                                                             dtype=torch.float64)
                            st[n] = t.float()
                        out = torch.func.functional_call(trained, st, (x,))
                        losses.append(float(torch.nn.functional.cross_entropy(
                            out.double(), y)))
                    if s > 0 and np.mean(losses) <= eps + 1e-12:
                        best = min(best, a * a * d2 / (s * s))
            got = res.summary["criticality"][f"direct/{mod}"]
            assert got == pytest.approx(best, rel=1e-6), mod
    # on the loss the score moves with epsilon instead of jumping between a few values
    grid = res.tables["grid"]
    part = grid[grid["module"] == "conv"]
    tols = np.linspace(0.0, 1.0, 21)
    scores = {criticality.criticality_score(part, base + t) for t in tols}
    assert len(scores) >= 3


def test_what_transferred_criticality_grid_is_finer_with_several_draws():
    from transferscope.analyses.criticality import CriticalityOptions

    opts = CriticalityOptions()
    assert len(opts.alphas) >= 5 and len(opts.sigmas) >= 5
    assert opts.draws >= 3 and opts.metric == "loss"


# ------------------------------------------------------------------ 9. intervals
def test_composite_and_occlusion_intervals_bracket_their_estimates():
    from transferscope.analyses.composites import accuracy_intervals
    from transferscope.analyses.occlusion import fix_intervals

    rng = np.random.default_rng(0)
    kind = np.array(["neutral"] * 60 + ["against"] * 40 + ["agrees"] * 20)
    hits = np.concatenate([rng.random(60) < 0.8, rng.random(40) < 0.4, rng.random(20) < 0.9])
    r = accuracy_intervals(rng.random(50) < 0.9, hits, kind, seed=2, n_boot=500)
    drop = hits[:60].mean() - hits[60:100].mean()
    lo, hi = r["drop_against_vs_neutral_ci95"]
    assert lo < drop < hi and lo > 0  # a clear drop
    assert r["n_against"] == 40 and r["n_neutral"] == 60 and r["n_composites"] == 120
    lo, hi = r["against_ci95"]
    assert lo < hits[60:100].mean() < hi
    clean = np.random.default_rng(5).random(50) < 0.9
    assert accuracy_intervals(clean, hits, kind, seed=2, n_boot=200) == \
        accuracy_intervals(clean, hits, kind, seed=2, n_boot=200)  # seeded
    before = torch.tensor(rng.random(80) < 0.6)
    after = before | torch.tensor(rng.random(80) < 0.5)
    f = fix_intervals(before, after, seed=1)
    fixed = int((~before & after).sum())
    assert f["fixed_ci95"][0] <= fixed <= f["fixed_ci95"][1] and f["n"] == 80
    assert f["share_fixed"] == pytest.approx(fixed / int((~before).sum()))
    assert f == fix_intervals(before, after, seed=1)


def test_cka_intervals_over_images():
    from torch import nn

    from transferscope.analyses import cka

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 5, generator=g)
    y[:, :3] += x[:, :3]
    feats = {("a", "l"): x, ("b", "l"): y}
    r = cka.cka_intervals(feats, [("a", "b")], ["l"], n_boot=300, seed=1)
    point = cka.linear_cka(x, y)
    assert cka._gram_cka((x @ x.T).double().numpy(), (y @ y.T).double().numpy(),
                         np.arange(40)) == pytest.approx(point)
    lo, hi = r["cka_ci95"]["a & b"]["l"]
    assert lo < point < hi and r["n"] == 40
    # resampling with replacement raises CKA; the interval is bias-corrected so that it still
    # brackets the estimate when the features are weakly related and n is small
    xs, ys = torch.randn(25, 8, generator=g), torch.randn(25, 8, generator=g)
    weak = cka.cka_intervals({("a", "l"): xs, ("b", "l"): ys}, [("a", "b")], ["l"],
                             n_boot=300, seed=0)
    lo, hi = weak["cka_ci95"]["a & b"]["l"]
    assert lo <= cka.linear_cka(xs, ys) <= hi
    assert r == cka.cka_intervals(feats, [("a", "b")], ["l"], n_boot=300, seed=1)
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    m2 = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    batches = [torch.randn(10, 3, 8, 8, generator=g) for _ in range(3)]
    res = cka.cka_tables({"A": m1, "B": m2}, batches, layers=["0", "2"], pool="avg", n_boot=100)
    for layer in ("0", "2"):
        lo, hi = res.summary["cka_ci95"]["A & B"][layer]
        assert lo <= res.summary["cka"]["A & B"][layer] <= hi
    assert res.summary["n"] == 30


# ------------------------------------------------------------------ 10. l2 with P (Table 2)
def test_distances_to_the_pretrained_model_skip_its_other_head():
    from test_what_is_transferred import sd, tiny_model

    from transferscope.analyses import distances
    from transferscope.errors import ModelError

    p, pt, rit = tiny_model(0, classes=5), tiny_model(1, classes=3), tiny_model(2, classes=3)
    states = {"P-T #1": sd(pt), "RI-T #1": sd(rit), "P": sd(p)}
    with pytest.raises(ModelError):  # the heads differ: refused unless asked to skip them
        distances.distance_tables(states, pt, pairs=[("P-T #1", "P")])
    res = distances.distance_tables(states, pt, pairs=[("P-T #1", "RI-T #1"), ("P-T #1", "P"),
                                           ("RI-T #1", "P")], head_mismatch="skip")
    body = [n for n, _ in pt.named_parameters() if not n.startswith("head.")]
    for name, other in (("P-T #1", pt), ("RI-T #1", rit)):
        direct = math.sqrt(sum(float((sd(other)[n].double() - sd(p)[n].double()).square().sum())
                               for n in body))
        assert res.summary["pairwise_total"][f"{name} & P"] == pytest.approx(direct)
    t = res.tables["pairwise"]
    head = t[(t["pair"] == "P-T #1 & P") & t["is_classifier"]]
    assert head["l2"].isna().all()
    same_head = t[(t["pair"] == "P-T #1 & RI-T #1") & t["is_classifier"]]
    assert same_head["l2"].notna().all()  # equal shapes still count


def test_lingering_features_count_votes_on_the_training_split(colour_audit):
    from transferscope.analyses import lingering_features as lingering

    res = lingering.run(colour_audit, k=1)
    t = res.tables["per_class"]
    assert t["lingering (fine-tuned)"].tolist()[:3] == [True, False, True]  # same L as detector
    assert res.summary["target_images"] == 8 and "training" in res.notes[0]

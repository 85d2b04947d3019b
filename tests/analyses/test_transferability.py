"""Known-answer tests of paper 002's analyses: transferability (eq. 1-2), domain gap/width,
the eq.-3 regression, layer gradients and the first-layer t-test."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.feature import graycomatrix, graycoprops

from transferscope.analyses import domain, transferability as tr
from transferscope.analyses import layer_gradients as gradients
from transferscope.analyses import transferability_factors as regression
from transferscope.data import image_folder
from transferscope.errors import ConfigError, ModelError
from transferscope.models import create_model


def _states(arch, **kw):
    torch.manual_seed(0)
    model = create_model(arch, 2, **kw)
    theta_r = {k: v.clone() for k, v in model.state_dict().items()}
    theta_b = {k: v.clone() for k, v in create_model(arch, 2, **kw).state_dict().items()}
    return model, theta_r, theta_b


@pytest.fixture(scope="module", params=[("baseline_cnn", {"image_size": 32}), ("resnet18", {})],
                ids=["baseline_cnn", "resnet18"])
def states(request):
    return _states(request.param[0], **request.param[1])


# ------------------------------------------------------------------ transferability (eq. 1-2)
def test_mean_abs_diff_by_hand():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([1.0])}
    b = {"w": torch.zeros(2, 2), "b": torch.tensor([5.0])}
    assert tr.mean_abs_diff(a, b, ["w", "b"]) == pytest.approx(14 / 5)   # pooled, not per tensor
    assert tr.mean_abs_diff(a, b, ["b"]) == 4.0


def test_theta_a_equal_theta_r_gives_exactly_one(states):
    model, theta_r, theta_b = states
    table = tr.layer_transferability(dict(theta_r), theta_b, theta_r, model)
    assert list(table["layer"]) == [g.name for g in model.layer_groups()]
    assert (table["T"] == 1.0).all() and table["finite"].all()
    assert table["is_classifier"].tolist() == [False] * (len(table) - 1) + [True]
    # parameters only: every parameter once, no buffers (BN running statistics)
    assert table["n_params"].sum() == sum(p.numel() for p in model.parameters())
    assert tr.whole_network_T(table) == 1.0


def test_halfway_start_gives_two_and_buffers_do_not_count(states):
    model, theta_r, theta_b = states
    theta_a = {k: r + 0.5 * (theta_b[k] - r) if r.is_floating_point() else r
               for k, r in theta_r.items()}
    shifted_b = {k: v + 100 if "running" in k else v for k, v in theta_b.items()}
    table = tr.layer_transferability(theta_a, shifted_b, theta_r, model)
    np.testing.assert_allclose(table["T"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(table["D(theta_A, theta_B)"], 0.5 * table["D(theta_r, theta_B)"],
                               rtol=1e-6)


def test_theta_a_equal_theta_b_is_flagged_not_raised(states):
    model, theta_r, theta_b = states
    table = tr.layer_transferability(theta_b, theta_b, theta_r, model)
    assert np.isinf(table["T"]).all() and not table["finite"].any()
    assert table["note"].str.contains("D\\(theta_A, theta_B\\) = 0").all()
    assert math.isnan(tr.whole_network_T(table))
    same = tr.layer_transferability(theta_r, theta_r, theta_r, model)
    assert same["T"].isna().all() and (same["note"] != "").all()


def test_whole_network_T_excludes_classifier_and_non_finite():
    table = pd.DataFrame({"layer": list("abcde"), "T": [2.0, 4.0, math.inf, math.nan, 100.0],
                          "is_classifier": [False, False, False, False, True]})
    assert tr.whole_network_T(table) == 3.0


def test_mismatches_name_parameter_and_state_dict(states):
    model, theta_r, theta_b = states
    first = model.layer_groups()[0]
    pname = first.parameter_names(model)[0]
    bad = dict(theta_b)
    bad[pname] = torch.zeros(3)
    with pytest.raises(ModelError, match=rf"{pname}.*{first.name}.*theta_FB"):
        tr.layer_transferability(theta_r, bad, theta_r, model, b_label="theta_FB")
    missing = {k: v for k, v in theta_r.items() if k != pname}
    with pytest.raises(ModelError, match=rf"{pname}.*missing from theta_r"):
        tr.layer_transferability(theta_b, theta_b, missing, model)
    with pytest.raises(ModelError, match="missing from b"):
        tr.mean_abs_diff(theta_r, missing, [pname])


def test_layer_groups_objects_and_run(states, tmp_path):
    model, theta_r, theta_b = states
    theta_a = {k: v * 0.9 for k, v in theta_b.items()}
    with pytest.raises(ModelError, match="model="):
        tr.layer_transferability(theta_a, theta_b, theta_r, model.layer_groups())
    t1 = tr.layer_transferability(theta_a, theta_b, theta_r, model.layer_groups(), model=model)
    t2 = tr.layer_transferability(theta_a, theta_b, theta_r, model)
    pd.testing.assert_frame_equal(t1, t2)
    res = tr.network_transferability(model, theta_a, theta_r, fine_tuned=theta_b, scratch=theta_r, label="toy")
    assert res.summary["T_FB"] == pytest.approx(tr.whole_network_T(t2))
    assert res.summary["T_SB"] == 0.0                 # theta_SB == theta_r: D(r, SB) = 0
    assert set(res.tables["layers"]["variant"]) == {"T_FB", "T_SB"}
    assert res.save(tmp_path)["figures"]


# ------------------------------------------------------------------ domain gap and width
def test_mmd_near_zero_for_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 3)), rng.normal(size=(500, 3))
    assert abs(domain.mmd(x, y)) < 0.01
    assert abs(domain.mmd(x, x)) < 0.01
    for bw in (None, 1.0):
        vals = [domain.mmd(x, y + np.array([s, 0, 0]), bw) for s in (0, 0.5, 1, 2)]
        assert all(a < b for a, b in zip(vals, vals[1:])), vals
    assert domain.mmd([[0.0], [0.0]], [[1.0], [1.0]], 1.0) == pytest.approx(2 - 2 * math.exp(-0.5))


def _direct_texture(grey: np.ndarray, levels=64) -> np.ndarray:
    q = (grey.astype(int) * levels // 256).astype(np.uint8)
    glcm = graycomatrix(q, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=levels,
                        symmetric=True, normed=True)
    p = glcm[:, :, 0, :]
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=(0, 1))
    return np.concatenate([graycoprops(glcm, "ASM")[0], entropy,
                           graycoprops(glcm, "contrast")[0], graycoprops(glcm, "homogeneity")[0]])


@pytest.mark.parametrize("shape", [(12, 16), (192, 256)])
def test_image_features_match_direct_computation(shape):
    rng = np.random.default_rng(1)
    arr = (rng.random(shape + (3,)) * 255).astype(np.uint8)
    arr[: shape[0] // 2] //= 3                          # some structure
    feats = domain.image_features(arr)
    assert feats.shape == (22,) and len(domain.FEATURE_NAMES) == 22
    rgb = arr / 255.0
    np.testing.assert_allclose(feats[:3], np.mean(rgb, axis=(0, 1)))
    np.testing.assert_allclose(feats[3:6], np.std(rgb, axis=(0, 1)))
    grey = Image.fromarray(arr).convert("L")
    if min(shape) > 128:                                 # short side downscaled to 128
        grey = grey.resize((round(shape[1] * 128 / shape[0]), 128), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(feats[6:], _direct_texture(np.asarray(grey)), rtol=1e-10)
    np.testing.assert_allclose(domain.image_features(Image.fromarray(arr)), feats)


def test_width_is_top_eigenvalue_and_standardize_uses_source():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    cov = q @ np.diag([5.0, 2.0, 0.5]) @ q.T
    x = rng.multivariate_normal(np.zeros(3), cov, size=20000)
    w = domain.domain_width(x)
    assert w == pytest.approx(np.linalg.eigvalsh(np.cov(x, rowvar=False)).max(), rel=1e-12)
    assert w == pytest.approx(5.0, rel=0.05)
    src, tgt = rng.normal(3.0, 2.0, size=(400, 3)), rng.normal(3.0, 2.0, size=(300, 3))
    tz, sz = domain.standardize(tgt, src)
    np.testing.assert_allclose(sz.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(sz.std(0), 1)
    np.testing.assert_allclose(tz, (tgt - src.mean(0)) / src.std(0))


def test_dataset_features_and_domain_run(tiny_split, tiny_folder):
    train = image_folder(tiny_split, "train")
    assert domain.dataset_features(train).shape == (16, 22)
    sub = domain.dataset_features(train, limit=5, seed=3)
    assert sub.shape == (5, 22)
    np.testing.assert_array_equal(sub, domain.dataset_features(train, limit=5, seed=3))
    res = domain.domain_statistics({"tiny": train, "val": image_folder(tiny_split, "val")},
                     image_folder(tiny_folder))
    table = res.tables["domains"]
    assert list(table["N"]) == [16, 8] and np.isfinite(table[["gap", "width"]]).all().all()
    assert set(res.summary) == {"tiny", "val"}


# ------------------------------------------------------------------ regression (eq. 3)
def test_regression_recovers_coefficients():
    rng = np.random.default_rng(3)
    t = pd.DataFrame({"gap": rng.random(8) * 5, "width": rng.random(8) * 3,
                      "N": np.exp(rng.random(8) * 4 + 6), "target": list("abcdefgh")})
    log_n = np.log(t["N"])
    t["T_FB"] = np.exp(-0.02 * t["gap"] - 0.14 * t["width"] - 0.8 * log_n + 2.86)
    t["T_SB"] = np.exp(0.3 * t["gap"] + 0.1 * log_n)
    fit = regression.fit_log_T(t)
    np.testing.assert_allclose([fit["coefficients"][k] for k in regression.COEFFICIENTS],
                               [-0.02, -0.14, -0.8, 2.86], atol=1e-9)
    assert fit["r2"] == pytest.approx(1.0) and fit["identifiable"]
    assert regression.fit_log_T(t, standardize=True)["r2"] == pytest.approx(1.0)
    res = regression.fit_factors(t)
    assert set(res.tables["coefficients"]["variant"]) == {"T_FB", "T_SB"}
    assert res.summary["T_SB"]["coefficients"]["gap"] == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="at least 4"):
        regression.fit_log_T(t.head(3))
    t.loc[0, "T_FB"] = -1.0
    assert regression.fit_log_T(t)["dropped"] == [0]


# ------------------------------------------------------------------ gradients and t-test
def _batches(n=2, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, 3, 32, 32, generator=g), torch.randint(0, 2, (bs,), generator=g))
            for _ in range(n)]


def test_layer_gradients_match_autograd():
    torch.manual_seed(0)
    model = create_model("baseline_cnn", 2, image_size=32)
    model.backbone.conv1.weight.requires_grad_(False)   # frozen params are measured too
    model.train()
    batches = _batches(3)
    table = gradients.layer_gradients(model, batches, max_batches=2)
    assert model.training and not model.backbone.conv1.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    expected = np.zeros(len(table))
    ref = copy.deepcopy(model).eval().requires_grad_(True)
    params = dict(ref.named_parameters())
    names = [n for _, ns, _ in tr.parameter_groups(ref) for n in ns]
    for x, y in batches[:2]:
        loss = F.cross_entropy(ref(x), y)
        grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))
        for k, (_, ns, _) in enumerate(tr.parameter_groups(ref)):
            expected[k] += sum(grads[n].abs().sum() for n in ns) / sum(grads[n].numel() for n in ns)
    np.testing.assert_allclose(table["mean_abs_grad"], expected / 2, rtol=1e-5)
    assert (table["batches"] == 2).all()
    res = gradients.gradient_profiles({"toy": (model, batches)}, max_batches=1)
    assert res.summary["toy"]["batches"] == 1 and "gradients" in res.figures


def test_first_layer_ttest():
    torch.manual_seed(0)
    before = create_model("baseline_cnn", 2, image_size=32)
    with torch.no_grad():
        before.backbone.conv1.weight.abs_()
        before.backbone.conv1.bias.zero_()
    x = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:24, 8:24] = True
    same = gradients.first_layer_ttest(before, copy.deepcopy(before), x, mask)
    assert same["identical"] and same["t"] == 0.0 and same["p"] == 1.0
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.backbone.conv1.weight.mul_(2)
    res = gradients.first_layer_ttest(before, after, x, mask)
    assert res["t"] < -10 and res["p"] < 1e-10 and not res["identical"]
    assert res["mean_after"] == pytest.approx(2 * res["mean_before"], rel=1e-5)
    assert res["n"] == 32 * 16 * 16 and res["layer"] == "conv1"
    for m in (before, after):
        assert not any(mod._forward_hooks for mod in m.modules())
    with pytest.raises(ConfigError, match="mask shape"):
        gradients.first_layer_ttest(before, after, x, mask[:10])


def test_first_layer_ttest_resnet_resizes_mask():
    torch.manual_seed(0)
    model = create_model("resnet18", 2)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[:, :32] = True
    res = gradients.first_layer_ttest(model, model, torch.rand(1, 3, 64, 64), mask)
    assert res["identical"] and res["pixels"] == 32 * 16 and res["channels"] == 64


def test_transferability_study_end_to_end(tmp_path):
    """Two tiny targets + a class sweep: runs share theta_r, Table 2 and the report appear."""
    from conftest import make_folder, write_image
    from transferscope.engine import load_run
    from transferscope.studies.kinds import run_kind
    from transferscope.studies.run import load_any

    for name, seed in (("a", 1), ("b", 2)):
        make_folder(tmp_path / name / "train", classes=("x", "y", "z"), per_class=4, seed=seed)
        make_folder(tmp_path / name / "val", classes=("x", "y", "z"), per_class=2, seed=seed + 5)
    for wnid, rgb in (("n01440764", (200, 40, 40)), ("n01443537", (40, 200, 40))):
        write_image(tmp_path / "src" / f"{wnid}_0.JPEG", rgb)
    study = tmp_path / "study.toml"  # through the study file, as `transferscope audit` runs it
    a, b, src = (tmp_path / n for n in ("a", "b", "src"))
    study.write_text(f'kind = "transferability"\ntargets = ["{a}", "{b}"]\nsource = "{src}"\n'
                     'image_size = 32\nepochs = 1\nbatch_size = 8\nclass_counts = [2]\n'
                     'fractions = [0.5]\n')
    output = run_kind(load_any(study), tmp_path / "out")
    res = output.results
    assert output.report == tmp_path / "out" / "report.html"
    table = res["transferability"].tables["table2"].set_index("target")
    assert list(table.index) == ["a", "b", "a@0.5N", "a@2cls"]
    assert table.loc["a@2cls", "classes"] == 2 and table.loc["a@0.5N", "N"] == 6
    assert np.isfinite(table["T_FB"]).all() and np.isfinite(table["width"]).all()
    ft = load_run(tmp_path / "out" / "runs" / "a-fine-tuned", "init_random")
    sc = load_run(tmp_path / "out" / "runs" / "a-scratch", "init_random")
    assert ft.weights_hash() == sc.weights_hash()  # same theta_r for both runs
    assert {"transferability", "domain", "transferability_factors", "layer_gradients"} <= set(res)
    assert "paper 002" in (tmp_path / "out" / "report.html").read_text()

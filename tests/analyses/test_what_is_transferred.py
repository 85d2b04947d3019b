"""Known-answer tests for the paper-003 analyses ("What is being transferred in transfer
learning?"): block shuffling, mistakes, CKA, l2 distances, barriers, basins, criticality and
conv spectra. Everything runs on tiny synthetic tensors and models."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferscope.analyses import barriers, basins, cka, criticality, distances, mistakes, spectra
from transferscope.data.shuffle import BlockShuffle
from transferscope.data.transforms import IMAGENET_NORM
from transferscope.errors import ConfigError, ModelError
from transferscope.models import ClassifierHead, LayerGroup, TransferModel, create_model


# --------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions are far faster single-threaded (no thread hand-offs on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0, classes: int = 3) -> TransferModel:
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    groups = [LayerGroup("conv", ("backbone.0", "backbone.1")),
              LayerGroup("classifier", ("head",), is_classifier=True)]
    return TransferModel(backbone, ClassifierHead(4, classes), arch="custom", norm=IMAGENET_NORM,
                         groups=groups, default_size=8)


def tiny_data(n: int = 13, seed: int = 0, sizes=(5, 7)):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
    x[torch.arange(n), y] += 1.5  # class = brightest channel: learnable
    out, i = [], 0
    for s in list(sizes) + [n]:
        if i >= n:
            break
        out.append((x[i:i + s], y[i:i + s]))
        i += s
    return out  # batches of 5, 7, 1


def train(model: nn.Module, data, steps: int = 40) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    model.train()
    for _ in range(steps):
        for x, y in data:
            if len(y) > 1:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
    return model.eval()


def sd(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- block shuffle
@pytest.mark.parametrize("size", [8, 16])
def test_block_shuffle_identity_and_multiset(size):
    x = torch.rand(3, size, size, generator=torch.Generator().manual_seed(size))
    assert torch.equal(BlockShuffle(size, seed=3)(x), x)
    for b in (1, 2, 4, 8, "*"):
        y = BlockShuffle(b, seed=1)(x)
        assert y.shape == x.shape
        assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)
        if b != size:
            assert not torch.equal(y, x)


def test_block_shuffle_semantics():
    c, h = 3, 8
    # value encodes (channel, row, col): 100*c + 10*i + j
    x = (100 * torch.arange(c)[:, None, None] + 10 * torch.arange(h)[None, :, None]
         + torch.arange(h)[None, None, :]).float()
    y = BlockShuffle(1, seed=0)(x)
    # pixels move with all channels together: every output pixel is an input pixel triple
    assert torch.equal(y[1] - y[0], torch.full((h, h), 100.0))
    # blocks stay intact: every 4x4 output block is some contiguous input block
    z = BlockShuffle(4, seed=0)(x)
    for bi in range(2):
        for bj in range(2):
            blk = z[:, 4 * bi:4 * bi + 4, 4 * bj:4 * bj + 4]
            r0, c0 = int(blk[0, 0, 0]) // 10, int(blk[0, 0, 0]) % 10
            assert torch.equal(blk, x[:, r0:r0 + 4, c0:c0 + 4])
    # '*' also moves values across channels
    s = BlockShuffle("*", seed=0)(x)
    assert not torch.equal(s[1] - s[0], torch.full((h, h), 100.0))
    # one fixed permutation for every image (and for batched input)
    t = BlockShuffle(2, seed=5)
    assert torch.equal(t(2 * x + 1), 2 * t(x) + 1)
    assert torch.equal(t(torch.stack([x, x + 1]))[1], t(x + 1))
    assert not torch.equal(BlockShuffle(2, seed=6)(x), t(x))
    assert repr(t) == t.describe() == "BlockShuffle(block_size=2, seed=5)"
    assert BlockShuffle("*", 1).describe() == "BlockShuffle(block_size='*', seed=1)"
    with pytest.raises(ConfigError, match="10x10.*3"):
        BlockShuffle(3)(torch.zeros(3, 10, 10))
    with pytest.raises(ConfigError):
        BlockShuffle(0)


# --------------------------------------------------------------------------- mistakes
def test_mistake_counts_hand_made():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    p1 = torch.tensor([0, 0, 1, 1, 0, 0])  # correct: T T F T F F
    p2 = torch.tensor([0, 1, 1, 1, 1, 0])  # correct: T F F T T F
    t = mistakes.mistake_counts(p1, p2, labels, 2)
    all_ = t.iloc[-1]
    assert all_["class"] == "all"
    assert (all_["both_correct"], all_["g1"], all_["g2"], all_["common"]) == (2, 1, 1, 2)
    assert all_["r1"] == pytest.approx(1 / 3) and all_["r2"] == pytest.approx(1 / 3)
    c1 = t.iloc[1]
    assert (c1["g1"], c1["g2"], c1["common"], c1["acc1"]) == (0, 1, 1, pytest.approx(1 / 3))


def test_mistake_ratios_match_paper_table3():
    # Table 3, class 1: g1 = 645, g2 = 832, common = 3597 -> r1 = 0.1878, r2 = 0.1520
    g1, g2, common, both = 645, 832, 3597, 1000
    y = torch.zeros(g1 + g2 + common + both, dtype=torch.long)
    c1 = torch.tensor([True] * g1 + [False] * g2 + [False] * common + [True] * both)
    c2 = torch.tensor([False] * g1 + [True] * g2 + [False] * common + [True] * both)
    t = mistakes.mistake_counts(torch.where(c1, 0, 1), torch.where(c2, 0, 1), y, 2)
    row = t.iloc[-1]
    assert (row["g1"], row["g2"], row["common"]) == (g1, g2, common)
    assert row["r1"] == pytest.approx(0.1878, abs=1e-4)  # the paper truncates
    assert row["r2"] == pytest.approx(0.1520, abs=1e-4)


def test_mistakes_run(tmp_path):
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    logits = F.one_hot(torch.tensor([0, 1, 1, 1, 0, 2, 2, 2, 0]), 3).float()
    res = mistakes.mistake_tables({"P-T": (logits, y), "RI-T": (y.clone(), y), "P": (torch.zeros(9), y)},
                       class_sizes=[10, 20, 40], class_names=["a", "b", "c"])
    assert len(res.tables["pairs"]) == 3 and len(res.tables["per_class"]) == 9
    assert res.summary["models"]["RI-T"]["accuracy"] == 1.0
    assert res.summary["models"]["P-T"]["pearson_r"] == pytest.approx(
        np.corrcoef([10, 20, 40], [0.5, 2 / 3, 0.75])[0, 1])
    res.save(tmp_path)
    with pytest.raises(ConfigError, match="labels"):
        mistakes.mistake_tables({"a": (y, y), "b": (y, y.flip(0))})


# --------------------------------------------------------------------------- CKA
def _hsic_cka(x, y):
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, lm = x @ x.T, y @ y.T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h)
    return float(hsic(k, lm) / torch.sqrt(hsic(k, k) * hsic(lm, lm)))


def test_cka_known_answers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    assert cka.linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)
    y = torch.tanh(x @ torch.randn(6, 9, generator=g, dtype=torch.float64))
    ref = cka.linear_cka(x, y)
    assert 0 < ref < 1
    assert cka.linear_cka(3.7 * x, y) == pytest.approx(ref, abs=1e-12)
    assert cka.linear_cka(x + 5.0, y - 2.0) == pytest.approx(ref, abs=1e-12)
    assert _hsic_cka(x, y) == pytest.approx(ref, abs=1e-10)
    acc = cka.LinearCKA()
    for lo, hi in ((0, 16), (16, 39), (39, 40)):  # last batch of one row
        acc.update(x[lo:hi], y[lo:hi])
    assert acc.n == 40
    assert acc.compute() == pytest.approx(ref, abs=1e-10)
    # large feature means: shifted accumulation stays accurate
    big = cka.LinearCKA()
    for lo in range(0, 40, 7):
        big.update(x[lo:lo + 7] + 1e5, y[lo:lo + 7] * 10 - 3e4)
    assert big.compute() == pytest.approx(ref, abs=1e-8)
    m = cka.cka_matrix({"a": x, "b": y}, {"a": x @ q, "b": y})
    assert m.loc["a", "a"] == pytest.approx(1.0) and m.loc["b", "b"] == pytest.approx(1.0)
    assert m.loc["a", "b"] == pytest.approx(ref)


def test_streaming_cka_models(tmp_path):
    a, b = tiny_model(0), tiny_model(1)
    data = tiny_data()
    res = cka.cka_tables({"P-T": a, "P-T copy": tiny_model(0), "RI-T": b}, data,
                  layers=["conv", "backbone.2"])
    wide = res.summary["cka"]
    assert wide["P-T & P-T copy"]["conv"] == pytest.approx(1.0)
    full = torch.cat([x for x, _ in data])
    with torch.no_grad():
        fa, fb = a.eval().backbone[:3](full), b.eval().backbone[:3](full)
    assert wide["P-T & RI-T"]["backbone.2"] == pytest.approx(cka.linear_cka(fa, fb), abs=1e-9)
    avg = cka.streaming_cka({"a": a, "b": b}, data, [("a", "b")], ["backbone.2"], pool="avg")
    assert avg.iloc[0, 0] == pytest.approx(cka.linear_cka(fa.mean((2, 3)), fb.mean((2, 3))),
                                           abs=1e-6)  # float32 means, other summation order
    with pytest.raises(ConfigError, match="max_features"):
        cka.streaming_cka({"a": a, "b": b}, data, [("a", "b")], ["conv"], max_features=10)
    res.save(tmp_path)


# --------------------------------------------------------------------------- distances
def test_distances_hand_made():
    m = tiny_model()
    a = {k: torch.zeros_like(v) for k, v in m.state_dict().items()}
    b = dict(a)
    b["backbone.0.bias"] = torch.tensor([3.0, 0.0, 0.0, 0.0])
    b["head.fc.bias"] = torch.tensor([0.0, 4.0, 0.0])
    b["backbone.1.running_mean"] = torch.full((4,), 100.0)  # buffer: ignored
    t = distances.layer_distances(a, b, m)
    assert t.set_index("layer")["l2"].to_dict() == {"conv": 3.0, "classifier": 4.0, "total": 5.0}
    assert distances.l2_distance(a, b, ["backbone.0.bias"]) == 3.0
    res = distances.distance_tables({"x": a, "y": b, "z": a}, m, init={"y": a})
    assert res.summary["pairwise_total"] == {"x & y": 5.0, "x & z": 0.0, "y & z": 5.0}
    assert res.summary["to_init_total"] == {"y": 5.0}
    bad = dict(b)
    bad["head.fc.weight"] = torch.zeros(2, 4)
    with pytest.raises(ModelError, match="head.fc.weight"):
        distances.layer_distances(a, bad, m)
    del bad["head.fc.weight"]
    with pytest.raises(ModelError, match="head.fc.weight.*missing"):
        distances.distance_tables({"x": a, "bad": bad}, m)


# --------------------------------------------------------------------------- barriers
def test_interpolation_endpoints_exact():
    data = tiny_data()
    m0, m1 = train(tiny_model(0), data, 3), train(tiny_model(1), data, 3)
    t0, t1 = sd(m0), sd(m1)
    x = torch.cat([x for x, _ in data])
    net = tiny_model(2).eval()
    with torch.no_grad():
        for lam, ref in ((0.0, m0), (1.0, m1)):
            st = barriers.interpolate(t0, t1, lam)
            net.load_state_dict(st)
            assert torch.equal(net(x), ref(x))
            assert torch.equal(torch.func.functional_call(net, st, (x,)), ref(x))
    mid = barriers.interpolate(t0, t1, 0.25)
    k = "backbone.0.weight"
    assert torch.allclose(mid[k], 0.75 * t0[k] + 0.25 * t1[k], atol=1e-7)
    t1n = dict(t1, **{"backbone.1.num_batches_tracked": torch.tensor(7)})
    assert int(barriers.interpolate(t0, t1n, 0.4)["backbone.1.num_batches_tracked"]) == \
        int(t0["backbone.1.num_batches_tracked"])
    assert int(barriers.interpolate(t0, t1n, 1.7)["backbone.1.num_batches_tracked"]) == 7
    with pytest.raises(ModelError, match="head.fc.weight"):
        barriers.interpolate(t0, dict(t1, **{"head.fc.weight": torch.zeros(2, 4)}), 0.5)


def test_batched_path_equals_loop(tmp_path):
    data = tiny_data()
    m0, m1 = train(tiny_model(0), data, 3), train(tiny_model(1), data, 3)
    lams = [-1.0, 0.0, 0.5, 1.0, 2.0]
    for bn in (None, data[:2]):
        loop = barriers.evaluate_path(m0, m0.state_dict(), m1.state_dict(), lams, data, bn)
        fast = barriers.evaluate_path_batched(m0, m0.state_dict(), m1.state_dict(), lams, data,
                                              bn)
        assert np.allclose(loop[["loss", "accuracy"]], fast[["loss", "accuracy"]], atol=1e-6)
    plain = barriers.evaluate(m0, data)
    no_bn = barriers.evaluate_path(m0, sd(m0), sd(m1), [0.0], data, fold_bn=False,
                                   bn_reestimate=False)  # the model's own statistics
    assert no_bn.loc[0, "loss"] == pytest.approx(plain["loss"], abs=1e-12)
    folded = barriers.evaluate_path(m0, sd(m0), sd(m1), [0.0], data,  # BatchNorm folded
                                    bn_reestimate=False)
    assert folded.loc[0, "loss"] == pytest.approx(plain["loss"], abs=1e-6)
    assert torch.equal(m0.state_dict()["backbone.0.weight"], sd(m0)["backbone.0.weight"])
    res = barriers.barrier_paths(m0, {"a-b": (m0.state_dict(), m1.state_dict())}, data,
                       lambdas=[0, 0.5, 1])
    assert set(res.summary["a-b"]) >= {"loss_barrier", "accuracy_barrier"}
    res.save(tmp_path)


def test_barrier_height():
    df = pd.DataFrame({"lambda": [-1, 0, 0.5, 1, 2], "loss": [9, 1.0, 2.5, 2.0, 9],
                       "accuracy": [0, 0.8, 0.5, 0.6, 0]})
    assert barriers.barrier_height(df, "loss") == pytest.approx(1.0)
    assert barriers.barrier_height(df, "accuracy") == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="lambda = 0"):
        barriers.barrier_height(df[df["lambda"] != 0], "loss")


# --------------------------------------------------------------------------- basins
def test_basins_identical_solutions_zero_spread():
    data = tiny_data()
    m = train(tiny_model(0), data, 3)
    st = sd(m)
    est = basins.basin_estimates(m, [st, sd(m), sd(m)], data, num_samples=4, num_pairs=2,
                                 deltas=(0.1, 10.0), metric="loss", bn_reestimate=False)
    vals = est["samples"]["loss"]
    assert est["epsilon"] == 0.0 and vals.nunique() == 1
    # evaluated with BatchNorm folded into the convolutions: equal up to float rounding
    assert est["mu"] == pytest.approx(barriers.evaluate(m, data)["loss"], abs=1e-6)
    assert (est["vicinity"]["condition"] == 2).all()  # no extrapolation direction
    w = basins.hull_weights(3, 5, seed=1)
    assert np.allclose(w.sum(1), 1) and (w >= 0).all()
    assert basins.exit_weights(np.array([0.5, 0.5]), np.array([0.5, 0.5])) is None
    c = basins.exit_weights(np.array([0.2, 0.3, 0.5]), np.array([0.3, 0.3, 0.4]))
    assert c.min() == 0.0 and c.sum() == pytest.approx(1.0)
    res = basins.hull_basins(m, {"a": st, "b": sd(train(tiny_model(1), data, 3))}, data,
                     num_samples=3, num_pairs=2, deltas=(1.0, 100.0))
    assert res.summary["epsilon"] >= 0 and len(res.tables["by_delta"]) == 2


# --------------------------------------------------------------------------- criticality
def test_criticality_grid():
    data = tiny_data()
    init = tiny_model(0)
    trained = train(tiny_model(0), data, 40)
    base = barriers.evaluate(trained, data)["error"]
    alphas, sigmas = [0.0, 0.5, 1.0], [0.0, 0.5, 3.0]
    grid = criticality.criticality_grid(trained, sd(init), sd(trained), data, alphas=alphas,
                                        sigmas=sigmas, samples=2, seed=0)
    assert len(grid) == 2 * 3 * 3 and set(grid["module"]) == {"conv", "classifier"}
    at = grid.set_index(["module", "alpha", "sigma"])
    for mod in ("conv", "classifier"):
        assert at.loc[(mod, 1.0, 0.0), "error"] == base
        assert at.loc[(mod, 1.0, 3.0), "error"] >= at.loc[(mod, 1.0, 0.0), "error"]
        assert at.loc[(mod, 0.0, 0.0), "distance_sq"] == 0.0
    d = at.loc[("conv", 1.0, 0.0), "distance_sq"]
    assert at.loc[("conv", 0.5, 0.0), "distance_sq"] == pytest.approx(0.25 * d)
    part = grid[grid["module"] == "conv"]
    assert criticality.criticality_score(part, 1.0, "error") == 0.0  # alpha = 0 feasible
    assert criticality.criticality_score(part, -1.0, "error") == math.inf
    again = criticality.criticality_grid(trained, sd(init), sd(trained), data, alphas=alphas,
                                         sigmas=sigmas, samples=2, seed=0)
    assert again["error"].equals(grid["error"])  # seeded noise
    mid = barriers.interpolate(sd(init), sd(trained), 0.3)
    res = criticality.criticality_scores(trained, sd(init), sd(trained), data, modules=["conv"],
                          paths={"optimisation": [sd(init), mid, sd(trained)]},
                          alphas=[0.0, 1.0], sigmas=[0.0, 0.2], samples=1)
    sc = res.tables["scores"]
    assert list(sc["path"]) == ["direct", "optimisation"]
    g = res.tables["grid"].set_index(["path", "alpha", "sigma"])
    assert g.loc[("optimisation", 1.0, 0.0), "error"] == base
    assert g.loc[("optimisation", 1.0, 0.0), "distance_sq"] == pytest.approx(d)


# --------------------------------------------------------------------------- spectra
def explicit_conv_matrix(w, n, stride=1, dilation=1, groups=1):
    """Dense matrix of the circular cross-correlation (rows: out, i, j; cols: in, i, j)."""
    w = w.double().numpy()
    out, cin_g, kh, kw = w.shape
    og, m = out // groups, n // stride
    mat = np.zeros((out * m * m, cin_g * groups * n * n))
    for o in range(out):
        for cg in range(cin_g):
            c = (o // og) * cin_g + cg
            for i in range(m):
                for j in range(m):
                    for a in range(kh):
                        for b in range(kw):
                            ii = (stride * i + dilation * a - kh // 2) % n
                            jj = (stride * j + dilation * b - kw // 2) % n
                            mat[(o * m + i) * m + j, (c * n + ii) * n + jj] += w[o, cg, a, b]
    return mat


@pytest.mark.parametrize("shape,n,stride,dilation,groups", [
    ((2, 3, 3, 3), 5, 1, 1, 1), ((3, 2, 3, 3), 6, 2, 1, 1), ((2, 2, 3, 3), 6, 1, 2, 1),
    ((4, 2, 3, 3), 4, 1, 1, 2), ((2, 3, 5, 5), 3, 1, 1, 1)])
def test_fft_spectrum_matches_explicit_matrix(shape, n, stride, dilation, groups):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(n + stride))
    mat = explicit_conv_matrix(w, n, stride, dilation, groups)
    ref = np.sort(np.linalg.svd(mat, compute_uv=False))[::-1]
    got = spectra.conv_singular_values(w, n, stride=stride, dilation=dilation, groups=groups)
    assert got.shape == (len(ref),)
    assert np.allclose(got.numpy(), ref, atol=1e-4)
    if stride == dilation == groups == 1 and shape[-1] <= n:
        assert float((got ** 2).sum()) == pytest.approx(n * n * float((w.double() ** 2).sum()))


def test_explicit_matrix_is_the_convolution():
    w = torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w)
    assert np.allclose(explicit_conv_matrix(w, 5) @ x.flatten().numpy(), y.flatten().numpy())


def test_model_spectra(tmp_path):
    res = spectra.spectra_tables({"tiny": tiny_model(0), "rn18": create_model("resnet18", 3)}, 32,
                      thresholds=[0.1, 1.0, 1e6])
    layers = res.tables["layers"]
    rn = layers[layers["model"] == "rn18"].set_index("layer")
    assert rn.loc["backbone.conv1", "input_size"] == "32x32"
    # stride 2: a 16x16 grid of 64 x (3*2*2) matrices
    assert rn.loc["backbone.conv1", "num_sv"] == 16 * 16 * 12
    assert rn.loc["backbone.layer4.0.conv1", "input_size"] == "2x2"
    assert rn.loc["head.fc", "kind"] == "linear"
    table, vals = spectra.model_spectra(tiny_model(0), 8)
    assert float(vals["backbone.0"][0]) == pytest.approx(table.iloc[0]["spectral_norm"])
    assert res.summary["rn18"]["sum_fro_over_spec"] == pytest.approx(
        rn["fro_over_spec"].sum())
    counts = res.tables["count_below"].set_index(["model", "threshold"])["count"]
    assert counts[("rn18", 1e6)] == res.summary["rn18"]["num_singular_values"]
    assert list(spectra.count_below(torch.tensor([0.5, 1.0, 2.0]), [1.0, 3.0])) == [1, 3]
    res.save(tmp_path)


def test_block_shuffle_and_checkpoint_runners(tiny_split, tmp_path):
    from transferscope.engine import TrainConfig, get_recipe, train
    from transferscope.studies.kinds import run_kind
    from transferscope.studies.run import load_any
    from transferscope.studies.training_runs import run_checkpoint_transfer

    study = tmp_path / "shuffle.toml"  # through the study file, as `transferscope audit` runs it
    study.write_text(f'kind = "block_shuffle"\ndata = "{tiny_split}"\nblock_sizes = [32, 8, "*"]\n'
                     'image_size = 32\nepochs = 1\nbatch_size = 8\n')
    output = run_kind(load_any(study), tmp_path / "bs")
    res = output.results["block_shuffle"]
    assert output.report == tmp_path / "bs" / "report.html"
    table = res.tables["accuracy"]
    assert list(table["block size"]) == ["32", "8", "*"]
    assert ((table["speed P-T"] >= 0) & (table["speed P-T"] <= 1)).all()
    assert (tmp_path / "bs" / "report.html").exists()
    pre = TrainConfig(arch="efficientnet_lite0", init="random", data=str(tiny_split),
                      recipe=get_recipe("quick", epochs=2, image_size=32, batch_size=8))
    train(pre, tmp_path / "pre", keep_epochs=[1])  # the epoch checkpoint-transfer asks for
    study = tmp_path / "ck.toml"
    pre = tmp_path / "pre"
    study.write_text(f'kind = "pretraining_checkpoints"\npretrain_run = "{pre}"\n'
                     f'data = "{tiny_split}"\nimage_size = 32\nepochs = 1\nbatch_size = 8\n')
    ck = run_kind(load_any(study), tmp_path / "ck").results["pretraining_checkpoints"]
    assert list(ck.tables["checkpoints"]["pre-training epoch"]) == [0, 1, 2]
    again = run_checkpoint_transfer(tmp_path / "pre", str(tiny_split), tmp_path / "ck",
                                    checkpoints=[0, 2], image_size=32, epochs=1, batch_size=8)
    assert list(again.tables["checkpoints"]["pre-training epoch"]) == [0, 2]  # 0 = the init
    with pytest.raises(ConfigError, match="no checkpoints for epochs"):
        run_checkpoint_transfer(tmp_path / "pre", str(tiny_split), tmp_path / "ck2",
                                checkpoints=[7])

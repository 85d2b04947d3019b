from __future__ import annotations

import json

import pytest
import torch

from transferscope.data import eval_transform, image_folder
from transferscope.engine import ResultCache, TrainConfig, get_recipe, load_run, predict, train
from transferscope.errors import ConfigError
from transferscope.models import compose, create_model


def tiny_model(n=2):
    torch.manual_seed(0)
    return create_model("baseline_cnn", n, image_size=32)


def test_cache_roundtrip_and_corruption(tmp_path):
    cache = ResultCache(tmp_path)
    key = cache.key(a=1)
    assert key != cache.key(a=2) and cache.get(key) is None
    cache.put(key, {"x": torch.arange(1000.0)})
    assert torch.equal(cache.get(key)["x"], torch.arange(1000.0))
    raw = bytearray(cache.path(key).read_bytes())
    raw[-8] ^= 0x01
    cache.path(key).write_bytes(bytes(raw))
    assert cache.get(key) is None and cache.corrupt == 1 and not cache.path(key).exists()


def test_predict_matches_direct_forward_and_caches(tiny_folder, tmp_path):
    m, ds = tiny_model(), image_folder(tiny_folder)
    cache = ResultCache(tmp_path / "c")
    first = predict(m, ds, image_size=32, cache=cache, layers=["conv2", "fc1"], pool="avg",
                    batch_size=5)
    x = torch.stack([eval_transform(m.norm, 32)(ds.load_image(i)) for i in range(len(ds))])
    m.eval()
    with torch.no_grad():
        assert torch.allclose(first.logits, m(x), atol=1e-5)
    assert first.activations["conv2"].shape == (12, 64) and first.activations["fc1"].shape == (12, 512)
    assert torch.equal(first.labels, ds.targets) and not first.from_cache
    assert not m._forward_hooks and not any(mod._forward_hooks for mod in m.modules())
    second = predict(m, ds, image_size=32, cache=cache, layers=["conv2", "fc1"], pool="avg")
    assert second.from_cache and torch.equal(second.logits, first.logits)
    assert cache.hits == 1


def test_cache_misses_on_any_change(tiny_folder, tmp_path):
    m, ds = tiny_model(), image_folder(tiny_folder)
    cache = ResultCache(tmp_path / "c")
    predict(m, ds, image_size=32, cache=cache)
    assert not predict(m, ds.subset(range(5)), image_size=32, cache=cache).from_cache
    assert not predict(m, ds, image_size=32, cache=cache, layers=["conv1"]).from_cache
    other_tf = eval_transform(m.norm, 32).transforms[:-1]
    assert not predict(m, ds, transform=torch.nn.Sequential(*other_tf) if False else
                       __import__("torchvision").transforms.v2.Compose(other_tf),
                       cache=cache).from_cache
    before = predict(m, ds, image_size=32, cache=cache)
    with torch.no_grad():
        m.backbone.conv1.weight.mul_(0.5)
    assert not predict(m, ds, image_size=32, cache=cache).from_cache
    assert predict(m, ds, image_size=32, cache=cache).from_cache
    with torch.no_grad():  # a new head reuses the backbone pass and gives the new logits
        m.head.fc.bias.add_(1.0)
    after = predict(m, ds, image_size=32, cache=cache)
    with torch.no_grad():
        m.backbone.conv1.weight.mul_(2.0)
    restored = predict(m, ds, image_size=32, cache=cache)
    assert restored.from_cache and torch.allclose(restored.logits, before.logits + 1.0, atol=1e-5)
    assert not torch.allclose(after.logits, restored.logits)


def test_model_and_its_m_st_share_one_backbone_pass(tiny_folder, tmp_path):
    """compose(fine_tuned, source) differs only in its head: one forward pass, exact logits."""
    ft, src, ds = tiny_model(), tiny_model(), image_folder(tiny_folder)
    torch.manual_seed(1)
    src.reset_classifier(5)
    m_st = compose(ft, src)
    cache = ResultCache(tmp_path / "c")
    a = predict(ft, ds, image_size=32, cache=cache)
    b = predict(m_st, ds, image_size=32, cache=cache)
    assert cache.misses == 1 and b.from_cache and b.logits.shape == (len(ds), 5)
    plain = predict(m_st, ds, image_size=32, cache=ResultCache(enabled=False))
    assert torch.allclose(b.logits, plain.logits, atol=1e-6)
    assert torch.allclose(a.logits, predict(ft, ds, image_size=32,
                                            cache=ResultCache(enabled=False)).logits, atol=1e-6)
    m_st.prune_features([0])  # a pruned backbone is another backbone
    assert not predict(m_st, ds, image_size=32, cache=cache).from_cache


def test_unknown_layer_is_a_clear_error(tiny_folder):
    with pytest.raises(ConfigError, match="conv1"):
        predict(tiny_model(), image_folder(tiny_folder), image_size=32, layers=["nope"])


def _config(root, epochs=3, seed=0):
    return TrainConfig(arch="baseline_cnn", init="random", data=str(root), seed=seed,
                       recipe=get_recipe("paper000-scratch", epochs=epochs, image_size=32,
                                         batch_size=4, lr=1e-3))


def test_training_learns_and_writes_the_run(tiny_split, tmp_path):
    res = train(_config(tiny_split, epochs=4), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.json", "data.json", "init_random.safetensors", "init.safetensors",
                 "metrics.json", "model.safetensors", "checkpoints/epoch_0004.safetensors"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert set(metrics[0]) >= {"train_loss", "train_acc", "val_loss", "val_acc"}
    assert metrics[-1]["val_acc"] == 1.0  # colours separate the classes
    assert load_run(run).weights_hash() == res.model.weights_hash()
    assert load_run(run, "init_random").weights_hash() == load_run(run, "init").weights_hash()


def test_same_seed_same_weights_other_seed_not(tiny_split, tmp_path):
    a = train(_config(tiny_split, 2), tmp_path / "a").model.weights_hash()
    b = train(_config(tiny_split, 2), tmp_path / "b").model.weights_hash()
    c = train(_config(tiny_split, 2, seed=1), tmp_path / "c").model.weights_hash()
    assert a == b != c


def test_resume_after_interruption_equals_uninterrupted(tiny_split, tmp_path, monkeypatch):
    full = train(_config(tiny_split, 4), tmp_path / "full").model.weights_hash()
    import transferscope.engine.training as tr

    real, calls = tr._evaluate, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # killed during epoch 3, after epochs 1-2 were checkpointed
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "_evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_split, 4), tmp_path / "cut")
    monkeypatch.setattr(tr, "_evaluate", real)
    assert len(json.loads((tmp_path / "cut" / "metrics.json").read_text())) == 2
    with pytest.raises(ConfigError, match="--resume"):
        train(_config(tiny_split, 4), tmp_path / "cut")
    resumed = train(_config(tiny_split, 4), tmp_path / "cut", resume=True)
    assert resumed.model.weights_hash() == full
    assert [m["epoch"] for m in resumed.metrics] == [1, 2, 3, 4]


def test_resume_with_other_settings_is_refused(tiny_split, tmp_path):
    train(_config(tiny_split, 1), tmp_path / "r")
    with pytest.raises(ConfigError, match="recipe"):
        train(_config(tiny_split, 2), tmp_path / "r", resume=True)


def test_fine_tune_theta_r_differs_from_start(tiny_split, tmp_path):
    cfg = TrainConfig(arch="efficientnet_lite0", init="imagenet", data=str(tiny_split),
                      recipe=get_recipe("quick", epochs=1, image_size=32, batch_size=8))
    train(cfg, tmp_path / "ft")
    theta_r, start = load_run(tmp_path / "ft", "init_random"), load_run(tmp_path / "ft", "init")
    assert not torch.equal(theta_r.backbone._conv_stem.weight, start.backbone._conv_stem.weight)
    assert torch.equal(theta_r.head.fc.weight, start.head.fc.weight)  # head: same random init


def test_reestimate_bn_gives_the_data_statistics():
    from transferscope.engine.batchnorm import reestimate_bn

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3, momentum=0.01)
    batches = [torch.randn(4, 3, 5, 5) * 2 + 1 for _ in range(3)]
    reestimate_bn(torch.nn.Sequential(bn), batches)
    means = torch.stack([b.mean((0, 2, 3)) for b in batches])
    var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-6)  # equal-weight average
    assert torch.allclose(bn.running_var, var.mean(0), atol=1e-5)
    assert bn.momentum == 0.01 and bn.training  # settings restored


def test_precise_bn_runs_for_random_init_and_matches_the_training_data(tiny_split, tmp_path):
    from transferscope.analyses.barriers import evaluate

    cfg = TrainConfig(arch="efficientnet_lite0", init="random", data=str(tiny_split),
                      recipe=get_recipe("quick", epochs=1, image_size=32, batch_size=8))
    assert cfg.recalibrates_bn() and not cfg.model_copy(update={"init": "imagenet"}).recalibrates_bn()
    lite = create_model("efficientnet_lite0", 2, image_size=32)  # BN momentum 0.01
    assert cfg.model_copy(update={"init": "imagenet"}).recalibrates_bn(lite)
    assert not cfg.model_copy(update={"init": "imagenet"}).recalibrates_bn(tiny_model())
    assert not cfg.model_copy(update={"precise_bn": False}).recalibrates_bn(lite)
    res = train(cfg, tmp_path / "ri")
    bn = [m for m in res.model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert bn.momentum == pytest.approx(0.01)  # lite0's own momentum, unchanged
    # the saved statistics are the training data's: a further re-estimation changes nothing
    from torch.utils.data import DataLoader

    from transferscope.engine.batchnorm import reestimate_bn

    data = image_folder(str(tiny_split), "train").with_transform(eval_transform(res.model.norm, 32))
    before = bn.running_mean.clone()
    reestimate_bn(res.model, DataLoader(data, batch_size=8))
    assert torch.allclose(bn.running_mean, before, atol=1e-6)
    assert res.metrics[-1]["val_acc"] == evaluate(
        res.model, DataLoader(image_folder(str(tiny_split), "val").with_transform(
            eval_transform(res.model.norm, 32)), batch_size=8))["accuracy"]


def test_bf16_precision_is_close_to_fp32_and_cached_apart(tiny_folder, tmp_path):
    m, ds = tiny_model(), image_folder(tiny_folder)
    cache = ResultCache(tmp_path / "c")
    fp32 = predict(m, ds, image_size=32, cache=cache)
    bf16 = predict(m, ds, image_size=32, cache=cache, precision="bf16")
    assert not bf16.from_cache and bf16.logits.dtype == torch.float32
    scale = fp32.logits.abs().max()
    err = (bf16.logits - fp32.logits).abs().max()
    assert 0 < err <= 0.05 * scale  # bfloat16 keeps 8 bits of mantissa: close, not equal
    assert predict(m, ds, image_size=32, cache=cache, precision="bf16").from_cache
    with pytest.raises(ConfigError, match="precision"):
        predict(m, ds, image_size=32, cache=cache, precision="fp16")


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "baseline_cnn"])
def test_batchnorm_folding_matches_the_model(arch):
    """Folded copies give the model's outputs for other weights and statistics too."""
    from transferscope.engine.batchnorm import BatchNormFolder, bn_layers

    torch.manual_seed(0)
    m = create_model(arch, 3, image_size=32) if arch == "baseline_cnn" else create_model(arch, 3)
    for bn in bn_layers(m).values():  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 32)
    folder = BatchNormFolder.build(m, x[:2])
    n_bn = sum(isinstance(b, torch.nn.BatchNorm2d) for b in m.modules())
    if n_bn == 0:
        assert folder is None
        return
    assert len(folder.pairs) == n_bn and not any(
        isinstance(b, torch.nn.BatchNorm2d) for b in folder.model.modules())
    other = {k: v * 1.1 if v.is_floating_point() and "running_var" not in k else v
             for k, v in m.state_dict().items()}
    m.load_state_dict(other)
    with torch.no_grad():
        ref = m.eval()(x)
        got = torch.func.functional_call(folder.model, folder.state(other), (x,))
    assert torch.allclose(got, ref, atol=1e-4 * ref.abs().max().item())


def test_batchnorm_folding_refuses_a_conv_output_read_twice():
    from transferscope.engine.batchnorm import BatchNormFolder

    class Skip(torch.nn.Module):  # bn(conv(x)) + conv(x): folding would change the sum
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
            self.bn.running_mean.fill_(0.7)

        def forward(self, x):
            y = self.conv(x)
            return (self.bn(y) + y).mean((2, 3))

    assert BatchNormFolder.build(Skip(), torch.randn(2, 3, 8, 8)) is None


def test_auto_batch_size_keeps_about_16_images_of_128px_on_cpu(tiny_folder, tmp_path):
    from transferscope.engine.inference import auto_batch_size

    assert auto_batch_size(128) == 16 and auto_batch_size(224) == 5 and auto_batch_size(64) == 64
    assert auto_batch_size(1024) == 4 and auto_batch_size(96) == 28
    assert auto_batch_size(224, "cuda") == 32
    m, ds = tiny_model(), image_folder(tiny_folder)
    auto = predict(m, ds, image_size=32, cache=ResultCache(enabled=False))
    fixed = predict(m, ds, image_size=32, cache=ResultCache(enabled=False), batch_size=3)
    assert torch.allclose(auto.logits, fixed.logits, atol=1e-5)

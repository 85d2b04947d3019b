"""Several models over one data set: each image decoded once, results as predict() per model."""

from __future__ import annotations

import torch

from transferscope.data import image_folder
from transferscope.data.image_set import ImageSet
from transferscope.engine import ResultCache
from transferscope.engine.inference import predict, predict_many
from transferscope.models import create_model
from conftest import make_folder


def _models():
    torch.manual_seed(0)
    a = create_model("baseline_cnn", 2, init="random", image_size=32)
    b = create_model("baseline_cnn", 2, init="random", image_size=32)
    head_only = create_model("baseline_cnn", 3, init="random", image_size=32)
    head_only.backbone.load_state_dict(a.backbone.state_dict())  # a's backbone, own head
    return a, b, head_only


def test_predict_many_decodes_once_and_matches_predict(tmp_path, monkeypatch):
    make_folder(tmp_path / "set", per_class=5)
    data = image_folder(tmp_path / "set")
    loads = []
    for decoder in ("load_image", "load_tensor"):  # PIL or straight into a tensor
        original = getattr(ImageSet, decoder)
        monkeypatch.setattr(ImageSet, decoder, lambda self, i, *a, _f=original, **k:
                            loads.append(i) or _f(self, i, *a, **k))
    a, b, head_only = _models()
    cache = ResultCache(tmp_path / "cache")
    many = predict_many([a, b, head_only], data, image_size=32, batch_size=4, cache=cache,
                        num_workers=0, progress=False)
    assert sorted(loads) == list(range(len(data)))  # every image once, for two backbones
    loads.clear()
    fresh = ResultCache(tmp_path / "other-cache")
    for model, got in zip((a, b, head_only), many):  # the same numbers as one by one
        ref = predict(model, data, image_size=32, batch_size=4, cache=fresh, num_workers=0,
                      progress=False)
        assert torch.allclose(got.logits, ref.logits, atol=1e-6)
        assert torch.equal(got.labels, ref.labels)
    assert sorted(loads) == sorted(list(range(len(data))) * 2)  # one by one: once per backbone
    # the shared pass wrote predict()'s own cache entries: asking again computes nothing
    loads.clear()
    again = predict(b, data, image_size=32, batch_size=4, cache=cache, num_workers=0,
                    progress=False)
    assert again.from_cache and loads == []


def test_predict_many_with_everything_cached_or_one_model_is_predict(tmp_path):
    make_folder(tmp_path / "set", per_class=3)
    data = image_folder(tmp_path / "set")
    a, _, _ = _models()
    cache = ResultCache(tmp_path / "cache")
    (one,) = predict_many([a], data, image_size=32, cache=cache, progress=False)
    (two,) = predict_many([a], data, image_size=32, cache=cache, progress=False)
    assert not one.from_cache and two.from_cache
    # computed vs read back from the cache: the head runs on features of another memory
    # layout, which another CPU's kernels may sum in another order (AMD Zen 4: ~1e-5 apart)
    torch.testing.assert_close(one.logits, two.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(two.logits, predict_many([a], data, image_size=32, cache=cache,
                                                        progress=False)[0].logits,
                               rtol=0, atol=0)  # the same path (cache hit) twice: bit for bit
    assert predict_many([], data, cache=cache) == []

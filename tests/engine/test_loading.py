"""The data pipeline (issue 17): decoding workers sized to the machine, JPEG draft decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from transferscope.data import image_folder
from transferscope.data.images import load_rgb
from transferscope.data.transforms import (CROP_FRACTION, LITE_NORM, DraftDecode,
                                           describe_transform, eval_transform)
from transferscope.engine import ResultCache, predict
from transferscope.engine.loading import auto_workers, make_loader, usable_cpus
from transferscope.errors import ConfigError
from transferscope.models import create_model


def photo(path, w=500, h=375, seed=0, fmt="JPEG"):
    """A photo-like JPEG: smooth colour fields at three scales plus fine noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 90), (16, 50), (64, 25)):
        small = rng.integers(0, 256, (max(2, cells * 3 // 4), cells, 3), dtype=np.uint8)
        img += (np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC),
                           np.float32) - 128) * amp / 128
    img += rng.normal(0, 4, (h, w, 3)).astype(np.float32)  # sensor-like noise
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img + 128, 0, 255).astype(np.uint8)).save(path, fmt, quality=90)
    return path


@pytest.fixture
def photos(tmp_path):
    for k, c in enumerate(("ants", "bees")):
        for i in range(3):
            photo(tmp_path / "photos" / c / f"{c}{i}.jpg", seed=10 * k + i)
    return tmp_path / "photos"


@pytest.mark.parametrize("w,h,min_side", [(500, 375, 146), (500, 375, 256), (1000, 293, 146),
                                          (600, 292, 146), (2400, 1800, 146), (300, 200, 146),
                                          (375, 500, 73)])
def test_draft_keeps_the_shorter_side_at_least_the_resize_target(tmp_path, w, h, min_side):
    path = photo(tmp_path / "x.jpg", w, h)
    full, draft = load_rgb(path), load_rgb(path, min_side)
    assert full.size == (w, h) and draft.mode == "RGB"
    assert min(draft.size) >= min_side  # the resize after it only ever shrinks
    if min(w, h) >= 2 * min_side:  # reduced by the largest power of 2 that keeps it
        scale = round(w / draft.size[0])  # sides are rounded up
        assert scale in (2, 4, 8) and (scale == 8 or min(w, h) / (2 * scale) < min_side)
    else:
        assert draft.size == (w, h) and np.array_equal(np.asarray(draft), np.asarray(full))


def test_draft_only_touches_jpegs(tmp_path):
    png = photo(tmp_path / "x.png", fmt="PNG")
    assert load_rgb(png, 100).size == (500, 375)


def test_draft_decode_and_resize_is_close_to_full_decode(photos):
    ds = image_folder(photos)
    full = eval_transform(LITE_NORM, 128)
    draft = eval_transform(LITE_NORM, 128, draft=True)
    assert isinstance(draft, DraftDecode) and draft.decode_min_side == round(128 / CROP_FRACTION)
    assert describe_transform(draft) != describe_transform(full)  # own cache keys
    a = torch.stack([x for x, _ in ds.with_transform(full)])
    b = torch.stack([x for x, _ in ds.with_transform(draft)])
    assert a.shape == b.shape == (6, 3, 128, 128)
    diff = (a - b).abs() * 128 / 255  # back to [0, 1] pixel units (LITE_NORM's std is 128/255)
    assert diff.mean() < 0.01 and diff.max() < 0.2  # a few grey levels on average
    assert not torch.equal(a, b)  # really decoded differently


def test_fast_decode_predict_logits_stay_close_with_their_own_cache_entry(photos, tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", init="imagenet")  # the 1000-class source
    ds, cache = image_folder(photos), ResultCache(tmp_path / "c")
    full = predict(model, ds, image_size=128, cache=cache, fast_decode=False)
    fast = predict(model, ds, image_size=128, cache=cache, fast_decode=True)
    assert not fast.from_cache and cache.misses == 2
    delta = (full.logits - fast.logits).abs().max(dim=1).values
    spread = full.logits.std(dim=1)
    # measured on these synthetic photos: largest of the 1000 logit changes 0.34-1.29 where
    # the logits' std is 0.8-1.7; cosine similarity 0.968-0.998 (more than bf16 changes
    # them, benchmarks/RESULTS.md: why fast_decode is off by default)
    cosine = torch.nn.functional.cosine_similarity(full.logits, fast.logits)
    assert (delta < 1.5 * spread).all() and delta.median() < 0.5 * spread.median()
    assert (cosine > 0.95).all() and cosine.median() > 0.99
    assert (full.preds == fast.preds).float().mean() >= 5 / 6
    again = predict(model, ds, image_size=128, cache=cache, fast_decode=True)
    assert again.from_cache and torch.equal(again.logits, fast.logits)


def test_worker_processes_give_the_same_predictions(photos, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = create_model("baseline_cnn", 2, image_size=32)
    ds = image_folder(photos)
    one = predict(model, ds, image_size=32, batch_size=2, num_workers=0,
                  cache=ResultCache(enabled=False))
    two = predict(model, ds, image_size=32, batch_size=2, num_workers=2,
                  cache=ResultCache(enabled=False))
    assert torch.equal(one.logits, two.logits) and torch.equal(one.labels, two.labels)
    monkeypatch.setenv("TRANSFERSCOPE_WORKERS", "1")  # the environment chooses for None
    three = predict(model, ds, image_size=32, batch_size=2, cache=ResultCache(enabled=False))
    assert torch.equal(one.logits, three.logits)


def test_auto_workers_follow_the_cores_and_the_data(monkeypatch):
    monkeypatch.delenv("TRANSFERSCOPE_WORKERS", raising=False)
    assert auto_workers(48, 16, cpus=8) == 0  # three batches: not worth a worker
    assert auto_workers(200, 4, cpus=8) == 0  # nor 200 images
    assert [auto_workers(10_000, 16, cpus=c) for c in (1, 2, 4, 8, 16, 64)] == [0, 1, 2, 6, 8, 8]
    assert auto_workers(10_000, 16) == auto_workers(10_000, 16, cpus=usable_cpus())
    monkeypatch.setenv("TRANSFERSCOPE_WORKERS", "0")
    assert auto_workers(10_000, 16, cpus=64) == 0
    monkeypatch.setenv("TRANSFERSCOPE_WORKERS", "many")
    with pytest.raises(ConfigError, match="TRANSFERSCOPE_WORKERS"):
        auto_workers(10_000, 16)


def test_make_loader_pins_only_for_cuda_and_keeps_workers_when_asked():
    data = torch.utils.data.TensorDataset(torch.arange(10.0))
    cpu = make_loader(data, 2, num_workers=1, persistent=True)
    assert cpu.num_workers == 1 and cpu.persistent_workers and not cpu.pin_memory
    assert [b[0].tolist() for b in cpu] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [b[0].tolist() for b in cpu][-1] == [8, 9]  # a second pass with the same workers
    cuda = make_loader(data, 2, num_workers=0, device="cuda", persistent=True)
    assert cuda.pin_memory and not cuda.persistent_workers  # no workers to keep



_FAULTS = """
import resource, sys, torch
from transferscope.engine._memory import tune_heap
from transferscope.engine.inference import forward_batch
from transferscope.models import create_model
ran = tune_heap() if sys.argv[1] == "tuned" else False
torch.manual_seed(0)
torch.set_num_threads(1)
net = create_model("efficientnet_lite0", init="random").eval()
for _ in range(3):  # the heap grows to the pass's working set
    forward_batch(net, torch.randn(5, 3, 224, 224))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    forward_batch(net, torch.randn(5, 3, 224, 224))
print(ran, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def test_tune_heap_stops_fresh_pages_for_every_forward():
    """glibc's defaults map and zero the activations' pages again for every batch (thousands
    of page faults per image at 224 px); after tune_heap() the heap serves them."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        assert out[0] == str(mode == "tuned")  # it ran only where asked (glibc here)
        faults[mode] = float(out[1])
    assert faults["default"] > 500 and faults["tuned"] < 0.1 * faults["default"], faults

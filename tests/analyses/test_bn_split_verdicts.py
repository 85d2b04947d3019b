"""BatchNorm re-estimation along weight-space paths (barriers, basins, criticality) runs on
images that are never evaluated: a seeded sample of training images, or a held-out part of
the validation set when the study has no training split (issue 26, item 7)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from transferscope.analyses import barriers, basins, criticality
from transferscope.analyses._transfer import TransferInputs, split_indices
from transferscope.data.transforms import IMAGENET_NORM
from transferscope.models import ClassifierHead, LayerGroup, TransferModel

SCALE = 1e-3  # an image's id is written into its first pixel, times SCALE


class Ids(torch.utils.data.Dataset):
    """Images that carry their id, with the subset / with_transform of an ImageSet."""

    def __init__(self, ids):
        self.ids = list(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        x = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(self.ids[i])) * 0.5
        x[0, 0, 0] = self.ids[i] * SCALE
        return x, self.ids[i] % 3

    def subset(self, idx):
        return Ids([self.ids[i] for i in idx])

    def with_transform(self, _tf):
        return self


def tiny_model(seed: int) -> TransferModel:
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    groups = [LayerGroup("conv", ("backbone.0", "backbone.1")),
              LayerGroup("classifier", ("head",), is_classifier=True)]
    return TransferModel(backbone, ClassifierHead(4, 3), arch="custom", norm=IMAGENET_NORM,
                         groups=groups, default_size=8).eval()


def fake_ctx(train: bool):
    models = {f"P-T #{i}": tiny_model(i) for i in (1, 2)}
    inits = {k: tiny_model(10 + i).state_dict() for i, k in enumerate(models)}
    memo = {"transfer_inputs": TransferInputs(models, inits, [("P-T #1", "P-T #2")])}

    def memoize(key, compute):
        if key not in memo:
            memo[key] = compute()
        return memo[key]
    return SimpleNamespace(target_data=Ids(range(40)),
                           target_train_data=Ids(range(1000, 1060)) if train else None,
                           source=SimpleNamespace(norm=IMAGENET_NORM), image_size=8,
                           batch_size=8, memo=memo, memoize=memoize)


def ids(loader) -> set[int]:
    return {round(float(v) / SCALE) for x, _ in loader for v in x[:, 0, 0, 0]}


def spy(monkeypatch, module, name, seen):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.append((args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)


def test_split_indices_disjoint_and_seeded():
    ev, bn = split_indices(20, 20, 8, 6, seed=3, same_pool=True)
    assert len(ev) == 8 and len(bn) == 6 and not set(ev) & set(bn)
    assert (ev, bn) == split_indices(20, 20, 8, 6, seed=3, same_pool=True)
    ev, bn = split_indices(20, 20, None, 50, seed=0, same_pool=True)  # at most half for BN
    assert len(bn) == 10 and len(ev) == 10 and not set(ev) & set(bn)
    ev, bn = split_indices(20, 30, None, 6, seed=0, same_pool=False)  # two pools
    assert ev == list(range(20)) and len(bn) == 6


@pytest.mark.parametrize("train", [True, False])
def test_barriers_reestimate_on_images_they_do_not_evaluate(monkeypatch, train):
    ctx, seen = fake_ctx(train), []
    spy(monkeypatch, barriers, "barrier_paths", seen)
    res = barriers.run(ctx, lambdas=(0.0, 0.5, 1.0), bn_images=12)
    (args, kwargs), = seen
    evaluated, reestimated = ids(args[2]), ids(kwargs["bn_reestimate_loader"])
    assert evaluated and reestimated and not evaluated & reestimated
    info = res.summary["P-T #1 - P-T #2"]["bn"]
    assert info["bn_images"] == len(reestimated) == 12
    assert info["evaluation_images"] == len(evaluated) == (40 if train else 28)
    assert info["bn_split"] == ("training" if train else "validation") and info["disjoint"]
    assert "not evaluated" in barriers.finding(res).lead


@pytest.mark.parametrize("train", [True, False])
def test_basins_and_criticality_reestimate_on_other_images(monkeypatch, train):
    ctx, seen = fake_ctx(train), []
    spy(monkeypatch, basins, "hull_basins", seen)
    res = basins.run(ctx, images=10, samples=2, pairs=1, bn_images=8)
    (args, kwargs), = seen
    evaluated, reestimated = ids(args[2]), ids(kwargs["bn_reestimate_loader"])
    assert len(evaluated) == 10 and len(reestimated) == 8 and not evaluated & reestimated
    assert res.summary["P-T"]["bn"]["bn_images"] == 8
    seen.clear()
    spy(monkeypatch, criticality, "criticality_scores", seen)
    res = criticality.run(ctx, images=10, modules=2, alphas=(0.0, 1.0), sigmas=(0.0,),
                          draws=1, bn_images=8)
    (args, kwargs), = seen
    evaluated, reestimated = ids(args[3]), ids(kwargs["bn_reestimate_loader"])
    assert len(evaluated) == 10 and len(reestimated) == 8 and not evaluated & reestimated
    assert all(i >= 1000 for i in evaluated) == train  # Definition 3.2: training images
    assert res.summary["P-T #1"]["bn"]["evaluation_images"] == 10

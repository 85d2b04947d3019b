"""Paper 002, Fig. 10 over independent units (issue 26, item 6): each image is one unit (its
channels pooled over the object region), so upsampling the images leaves the unit-level
statistic about where it was, while the paper-style t over (channel, pixel) pairs grows."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from transferscope.analyses import layer_gradients as lg
from transferscope.analyses._base import AnalysisResult
from transferscope.data.transforms import IMAGENET_NORM
from transferscope.models import ClassifierHead, LayerGroup, TransferModel


def conv_model() -> TransferModel:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    groups = [LayerGroup("conv", ("backbone.0",)),
              LayerGroup("classifier", ("head",), is_classifier=True)]
    return TransferModel(backbone, ClassifierHead(8, 2), arch="custom", norm=IMAGENET_NORM,
                         groups=groups, default_size=16).eval()


def pair():
    before = conv_model()
    after = copy.deepcopy(before)
    with torch.no_grad():  # fine-tuning nudged the first layer; its effect varies by image
        g = torch.Generator().manual_seed(3)
        after.backbone[0].weight.add_(0.05 * torch.randn(after.backbone[0].weight.shape,
                                                         generator=g))
        after.backbone[0].bias.add_(0.02)
    return before, after


def smooth_images(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_upsampling_leaves_the_unit_statistic_and_inflates_the_paper_style_one():
    before, after = pair()
    x = smooth_images()
    big = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    small_t = lg.first_layer_ttests(before, after, list(x))
    big_t = lg.first_layer_ttests(before, after, list(big))
    s, b = lg.summarise_ttests(small_t), lg.summarise_ttests(big_t)
    assert s["images"] == b["images"] == 8
    assert abs(b["unit_t"] / s["unit_t"] - 1) < 0.15  # the unit is the image
    assert abs(b["unit_difference"]["value"] / s["unit_difference"]["value"] - 1) < 0.1
    assert b["unit_difference"]["unit"] == "image" and b["unit_difference"]["n"] == 8
    ratio = np.abs(big_t["t"].to_numpy() / small_t["t"].to_numpy())
    assert np.median(ratio) > 1.6  # pixels taken as samples: t grows with the resolution
    assert (big_t["n"] == 4 * small_t["n"]).all()


def test_one_image_cannot_tell_and_keeps_the_paper_style_statistic():
    before, after = pair()
    table = lg.first_layer_ttests(before, after, list(smooth_images(1)))
    s = lg.summarise_ttests(table)
    assert s["unit_note"] == "one image: cannot tell" and np.isnan(s["unit_t"])
    res = AnalysisResult("layer_gradients", {
        "ft": {"argmax_layer": "conv", "argmin_non_classifier": "conv", "batches": 1},
        "first_layer_ttest": {"ft": s}})
    f = lg.finding(res)
    assert "one image: cannot tell (paper-style t over (channel, pixel)" in f.text
    assert "pixels taken as independent" in f.text and f.caveat


def test_several_images_give_an_interval_over_images():
    table = pd.DataFrame({"t": [-20.0, -15.0, -30.0, -18.0], "p": [1e-9] * 4,
                          "mean_before": [1.0, 1.2, 0.8, 1.1],
                          "mean_after": [1.5, 1.6, 1.4, 1.5]})
    s = lg.summarise_ttests(table)
    assert s["unit_t"] < 0 and s["unit_difference"]["value"] == np.mean([0.5, 0.4, 0.6, 0.4])
    res = AnalysisResult("layer_gradients", {
        "ft": {"argmax_layer": "conv", "argmin_non_classifier": "conv", "batches": 1},
        "first_layer_ttest": {"ft": s}})
    f = lg.finding(res)
    assert f.estimates and f.estimates[0][1].n == 4 and not f.caveat
    assert "paired t over images" in f.text

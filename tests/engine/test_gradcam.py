"""Grad-CAM maps against an independent hook-based computation, and eq. 4's geometry."""

from __future__ import annotations

import pytest
import torch

from transferscope.analyses.distraction import box_mask, distraction, iou, top_fraction
from transferscope.engine.attribution import cam_layer, gradcam_batch
from transferscope.models import create_model


def reference_gradcam(model, x, target, layer):
    """Selvaraju et al.: ReLU(sum_k mean_ij(dy_c/dA_k) * A_k), one image at a time."""
    module = model.get_submodule(layer)
    store = {}
    h = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    maps = []
    try:
        for i in range(len(x)):
            model.zero_grad()
            out = model(x[i:i + 1])
            act = store["a"]
            grad, = torch.autograd.grad(out[0, target[i]], act)
            w = grad.mean(dim=(2, 3), keepdim=True)
            maps.append(torch.relu((w * act).sum(1))[0].detach())
    finally:
        h.remove()
    return torch.stack(maps)


@pytest.mark.parametrize("arch,size", [("baseline_cnn", 32), ("resnet18", 64),
                                       ("efficientnet_lite0", 64)])
@pytest.mark.parametrize("batch", [1, 3])
def test_batched_gradcam_equals_reference(arch, size, batch):
    torch.manual_seed(0)
    model = create_model(arch, 4, image_size=size).eval()
    x = torch.randn(batch, 3, size, size)
    target = torch.arange(batch) % 4
    layer = cam_layer(model)
    ours = gradcam_batch(model, x, target, layer)
    ref = reference_gradcam(model, x, target, layer)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def test_cam_layer_is_the_last_conv_group():
    assert cam_layer(create_model("baseline_cnn", 2, image_size=32)) == "backbone.conv3"
    assert cam_layer(create_model("resnet18", 2)) == "backbone.layer4.1"
    assert cam_layer(create_model("efficientnet_lite0", 2)) == "backbone._bn1"


def test_box_mask_top_fraction_and_iou_known_answers():
    mask = box_mask(torch.tensor([[1, 2, 3, 4]]), 5)[0]
    assert (~mask).sum() == 4 and not mask[2, 1] and not mask[3, 2] and mask[1, 1]
    maps = torch.arange(25.0).reshape(1, 5, 5)
    keep = torch.ones(1, 5, 5, dtype=torch.bool)
    top = top_fraction(maps, keep, 0.2)[0]
    assert top.sum() == 5 and top[4].all()  # the top 20% are the last row (values 20..24)
    keep[0, 4] = False  # remove the last row: the top 20% of the 20 values left are 16..19
    assert top_fraction(maps, keep, 0.2)[0].nonzero().tolist() == [[3, c] for c in range(1, 5)]
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[0, :2], b[0, 1:3] = True, True
    assert iou(a, b).item() == pytest.approx(4 / 12)
    assert iou(a, a).item() == 1.0 and iou(a & False, b & False).item() == 0.0


def test_distraction_ignores_the_overlay_box():
    size = 8
    src = torch.zeros(1, size, size)
    # the source model looks at the left edge (distinct values: the top 20 % of the 55
    # background pixels, 11, are well defined without tie-breaking)
    src[0, :, :2] = 1.0 + torch.arange(16.0).reshape(8, 2)
    tgt_same = src.clone()
    tgt_same[0, 3:6, 3:6] = 9.0  # strongest inside the box: must not matter
    tgt_other = torch.zeros(1, size, size)
    tgt_other[0, :, -2:] = 1.0 + torch.arange(16.0).reshape(8, 2)
    box = torch.tensor([[3, 3, 6, 6]])
    assert distraction(tgt_same, src, box, size).item() == pytest.approx(1.0)
    assert distraction(tgt_other, src, box, size).item() == pytest.approx(0.0)

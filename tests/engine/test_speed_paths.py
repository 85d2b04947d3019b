"""The fast paths of issue 7 give the numbers of their plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferscope.analyses import barriers, cka
from transferscope.engine.attribution import cam_layer, gradcam_batch
from transferscope.engine.inference import capture, forward_batch
from transferscope.models import create_model


def _cnn(seed: int, classes: int = 3, size: int = 32):
    torch.manual_seed(seed)
    return create_model("baseline_cnn", classes, image_size=size).eval()


def _batches(n=22, bs=8, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]  # last batch smaller


@pytest.mark.parametrize("pool", ["avg", "flatten"])
def test_cka_all_pairs_equals_per_pair_reference(pool):
    size = 32 if pool == "avg" else 8  # flatten: 2048 conv1 features at 8 px
    a, b = _cnn(0, size=size), _cnn(1, size=size)
    layers = [g.output_module for g in a.layer_groups(include_classifier=False)]
    if pool == "flatten":
        layers = layers[1:]
    data = _batches(size=size)
    fast = cka.cka_all_pairs(a, b, data, layers, layers[::-1], pool=pool)
    x = torch.cat([x for x, _ in data])
    acts = []
    for m, ls in ((a, layers), (b, layers[::-1])):
        with torch.no_grad(), capture(m, {n: m.get_submodule(n) for n in ls},
                                      "avg" if pool == "avg" else "none") as st:
            m(x)
        acts.append({n: v[0] for n, v in st.items()})
    ref = cka.cka_matrix(*acts)
    assert fast.shape == (len(layers), len(layers))
    assert np.allclose(fast.to_numpy(), ref.to_numpy(), atol=1e-6)
    assert not np.allclose(fast.to_numpy(), 1.0)
    self_cka = cka.cka_all_pairs(a, a, data, layers, pool=pool).to_numpy()
    assert np.allclose(np.diag(self_cka), 1.0, atol=1e-9)
    with pytest.raises(Exception, match="max_features"):
        cka.cka_all_pairs(a, b, data, layers, pool=pool, max_features=10)


def test_gradcam_batch_equals_captum_and_leaves_model_alone():
    from captum.attr import LayerGradCam

    model = create_model("resnet18", 4, image_size=64).eval()
    model.backbone.layer1.requires_grad_(False)  # a partly frozen model stays as it was
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    layer = cam_layer(model)
    target = torch.tensor([2, 0, 3])
    ref = LayerGradCam(model, model.get_submodule(layer)).attribute(
        x, target=target.tolist(), relu_attributions=True)[:, 0]
    ours = gradcam_batch(model, x, target, layer)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-5)
    pred_cam, logits = gradcam_batch(model, x, None, layer, return_logits=True)
    with torch.no_grad():
        assert torch.equal(logits.argmax(1), model(x).argmax(1))
    assert torch.allclose(pred_cam, gradcam_batch(model, x, logits.argmax(1), layer))
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_channels_last_barrier_paths_agree():
    m0, m1 = _cnn(0), _cnn(1)
    t0, t1 = m0.state_dict(), m1.state_dict()
    before = {k: v.clone() for k, v in t0.items()}
    data, lams = _batches(), [0.0, 0.3, 1.0, 1.5]
    cols = ["loss", "accuracy"]
    loop = barriers.evaluate_path(m0, t0, t1, lams, data, data[:1], channels_last=True)
    fast = barriers.evaluate_path_batched(m0, t0, t1, lams, data, data[:1], channels_last=True)
    nchw = barriers.evaluate_path_batched(m0, t0, t1, lams, data, data[:1])
    assert np.array_equal(loop[cols].to_numpy(), fast[cols].to_numpy())  # identical numbers
    assert np.allclose(fast[cols].to_numpy(), nchw[cols].to_numpy(), atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in m0.state_dict().items())
    assert m0.backbone.conv1.weight.is_contiguous()  # memory format restored


def test_forward_batch_matches_plain_forward():
    model = create_model("resnet18", 5, image_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(forward_batch(model, x, channels_last=False), ref)
    model.to(memory_format=torch.channels_last)
    assert torch.allclose(forward_batch(model, x), ref, atol=1e-5)


@pytest.mark.parametrize("arch", ["baseline_cnn", "efficientnet_lite0"])
def test_states_outer_and_batches_outer_orders_give_identical_numbers(arch):
    """Decoded batches (a list) run states outer, any other iterable batches outer; with
    BatchNorm re-estimation and folding (lite0) the numbers are the same, bit for bit."""
    torch.manual_seed(0)
    m = _cnn(0) if arch == "baseline_cnn" else create_model("efficientnet_lite0", 3)
    m1 = _cnn(1) if arch == "baseline_cnn" else create_model("efficientnet_lite0", 3)
    states = [barriers.interpolate(m.state_dict(), m1.state_dict(), lam)
              for lam in (0.0, 0.4, 1.0)]
    data = _batches()

    class Once:  # an iterable that is not a list: read batch by batch
        def __iter__(self):
            return iter(data)
    for bn in (None, data[:1]):
        listed = barriers.evaluate_states(m, states, data, bn_reestimate_loader=bn,
                                          channels_last=True)
        streamed = barriers.evaluate_states(m, states, Once(), bn_reestimate_loader=bn,
                                            channels_last=True)
        assert np.array_equal(listed[["loss", "accuracy"]].to_numpy(),
                              streamed[["loss", "accuracy"]].to_numpy())

"""AuditMonitor: equal to a full audit of the same weights on the same images, nothing left
behind (hooks, modes, gradients), memory flat over 20 epochs, thresholds and the report's
"during training" section."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest
import torch
from torch import nn

from transferscope.analyses import run_analysis
from transferscope.analyses.cka import cka_tables
from transferscope.analyses.context import AuditContext, ModelEntry
from transferscope.analyses.distances import layer_distances
from transferscope.callbacks import AuditMonitor, read_monitor
from transferscope.callbacks.view import as_transfer_model
from transferscope.data import image_folder, source_images
from transferscope.engine.cache import ResultCache
from transferscope.errors import ConfigError
from transferscope.models import create_model

SIZE = 32


def _perturb(model, seed, scale=0.02):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    source = create_model("efficientnet_lite0", init="imagenet")  # ImageNet head: M^s
    tuned = create_model("efficientnet_lite0", 2, init="imagenet")
    tuned.backbone.load_state_dict(source.backbone.state_dict())
    return source, tuned


def _monitor(data_root, source, tmp_path, **kw):
    return AuditMonitor(source, image_folder(data_root / "hymenoptera", "val"),
                        source_data=source_images(data_root / "imagenet-samples"),
                        out=tmp_path, image_size=SIZE,
                        **{"target_images": 24, "source_images": 40, **kw})


def full_audit_numbers(source, tuned, monitor):
    """The same quantities from the analyses' own entry points on the probe images."""
    tgt, src = monitor.target_probe.data, monitor.source_probe.data
    ctx = AuditContext(source, {"ft": tuned}, tgt, {"probe": src}, image_size=SIZE,
                       cache=ResultCache(enabled=False), progress=False,
                       entries={"ft": ModelEntry("ft", "fine-tuned", tuned.arch)})
    rk = run_analysis("retained_knowledge", ctx).summary["probe/ft + source head (M^st)"]
    dist = layer_distances(tuned, source, tuned, head_mismatch="skip")
    acc = ctx.predict(tuned, tgt).accuracy()
    from transferscope.engine.inference import default_transform

    tf = default_transform(tuned, tgt, SIZE)
    loader = torch.utils.data.DataLoader(tgt.with_transform(tf), batch_size=7)
    cka = cka_tables({"P": source, "ft": tuned}, loader, [("ft", "P")], pool="avg",
                     n_boot=0).summary["cka"]["ft & P"]
    return rk, dist, acc, cka


def test_monitor_equals_full_audit_of_the_same_weights(data_root, models, tmp_path):
    source, tuned = models
    mon = _monitor(data_root, source, tmp_path)
    first = mon.step(tuned, epoch=0)
    assert first["metrics"]["distance_to_pretrained/total"] == 0.0  # same backbone, head skipped
    assert first["metrics"]["cka_to_pretrained/mean"] == pytest.approx(1.0, abs=1e-9)
    _perturb(tuned, 1)
    last = mon.step(tuned, epoch=1)["metrics"]
    rk, dist, acc, cka = full_audit_numbers(source, tuned, mon)
    assert last["retained_knowledge/classes_recall_ge_50"] == rk["classes_recall_ge_50"]
    assert last["retained_knowledge/classes"] == rk["classes"] == 40
    assert last["retained_knowledge/mean_recall"] == pytest.approx(rk["mean_recall"], abs=1e-12)
    assert last["target_accuracy/accuracy"] == pytest.approx(acc, abs=1e-7)  # float32 mean there
    for row in dist.itertuples():
        if row.layer != "classifier":
            assert last[f"distance_to_pretrained/{row.layer}"] == pytest.approx(row.l2, rel=1e-9)
    for layer, value in cka.items():
        assert last[f"cka_to_pretrained/{layer}"] == pytest.approx(value, abs=1e-6)
    assert 0 < last["distance_to_pretrained/total"]
    rows = read_monitor(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["metrics"] == last
    iv = rows[1]["intervals"]["retained_knowledge/mean_recall"]
    assert iv["unit"] == "source class" and iv["n"] == 40


def test_nothing_left_behind_and_memory_flat_over_20_epochs(data_root, models, tmp_path):
    source, tuned = models
    mon = _monitor(data_root, source, tmp_path, target_images=8, source_images=8)
    tuned.train()
    tuned.backbone._blocks[0].eval()  # a mixed state must come back as it was
    modes = {n: m.training for n, m in tuned.named_modules()}
    flags = {n: p.requires_grad for n, p in tuned.named_parameters()}
    tuned.head.fc.weight.requires_grad_(False)
    flags["head.fc.weight"] = False
    sizes = []
    tracemalloc.start()
    try:
        for epoch in range(20):
            mon.step(tuned, epoch)
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert {n: m.training for n, m in tuned.named_modules()} == modes
    assert {n: p.requires_grad for n, p in tuned.named_parameters()} == flags
    assert all(p.grad is None for p in tuned.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tuned.modules())
    assert not any(m._forward_hooks for m in mon.pretrained.modules())
    growth = sizes[-1] - sizes[4]  # after warm-up: one JSON record per epoch at most
    assert growth < 200_000, f"memory grew by {growth} bytes over 15 epochs"
    assert len(read_monitor(tmp_path)) == 20


def test_every_and_thresholds(data_root, models, tmp_path):
    source, tuned = models
    tuned = create_model("efficientnet_lite0", 2, init="imagenet")
    tuned.backbone.load_state_dict(source.backbone.state_dict())
    mon = _monitor(data_root, source, tmp_path, every=2, target_images=8, source_images=8,
                   metrics=("distance_to_pretrained",),
                   thresholds={"distance_to_pretrained/total": "> 0",
                               "distance_to_pretrained/total ": "< 0"})
    done = []
    for epoch in range(5):
        if epoch:
            _perturb(tuned, epoch)
        done.append(mon.step(tuned, epoch) is not None)
    assert done == [True, False, True, False, True]
    cross = {c["rule"]: c for c in mon.close()["thresholds"]}
    assert cross["> 0"]["epoch"] == 2 and cross["< 0"]["epoch"] is None
    saved = json.loads((tmp_path / "monitor_summary.json").read_text())
    assert saved["thresholds"][0]["epoch"] == 2


def test_bad_settings_are_one_line(data_root, models):
    source, _ = models
    tgt = image_folder(data_root / "hymenoptera", "val")
    with pytest.raises(ConfigError, match="did you mean 'target_accuracy'"):
        AuditMonitor(source, tgt, metrics=("target_acuracy",))
    with pytest.raises(ConfigError, match="threshold"):
        AuditMonitor(source, tgt, thresholds={"x": "about 3"})
    with pytest.raises(ConfigError, match="target=.*nothere"):
        AuditMonitor(source, str(data_root / "nothere"))


def test_view_of_a_plain_module_shares_its_weights_and_leaves_it_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    keys = list(net.state_dict())
    view = as_transfer_model(net)
    x = torch.randn(3, 3, 12, 12)
    assert torch.equal(view(x), net(x))
    assert torch.equal(view.forward_features(x), net[:5](x))
    assert list(net.state_dict()) == keys and isinstance(net[5], nn.Linear)
    names = [n for n, _ in view.named_parameters()]  # the shared layer has one name: head.fc
    assert names[:2] == ["head.fc.weight", "head.fc.bias"] and len(names) == 6
    with torch.no_grad():
        net[5].bias.add_(1.0)  # training the module moves the view
    assert torch.allclose(view(x), net(x))
    assert not any(m._forward_pre_hooks for m in net.modules())


def test_training_curves_section_reads_the_run_directory(data_root, models, tmp_path):
    source, tuned = models
    run_dir = tmp_path / "run"
    mon = _monitor(data_root, source, run_dir, target_images=8, source_images=8,
                   thresholds={"cka_to_pretrained/mean": "< 0.999"})
    tuned = create_model("efficientnet_lite0", 2, init="imagenet")
    tuned.backbone.load_state_dict(source.backbone.state_dict())
    for epoch in range(3):
        if epoch:
            _perturb(tuned, epoch, scale=0.05)
        mon.step(tuned, epoch)
    mon.close()
    ctx = AuditContext(source, {"ft": tuned}, mon.target_probe.data, {}, image_size=SIZE,
                       entries={"ft": ModelEntry("ft", "fine-tuned", tuned.arch,
                                                 run_dir=run_dir)})
    from transferscope.analyses import get_analysis
    from transferscope.analyses._registry import finding_of

    assert get_analysis("training_curves").applicable(ctx)
    res = run_analysis("training_curves", ctx)
    assert set(res.tables["curves"]["epoch"]) == {0, 1, 2}
    text = finding_of(res).text
    assert "cka_to_pretrained/mean < 0.999 first at epoch 1" in text
    assert "distance_to_pretrained/total 0 ->" in text


def test_only_rank_0_computes_and_writes(data_root, models, tmp_path, monkeypatch):
    source, tuned = models
    mon = _monitor(data_root, source, tmp_path, target_images=4, source_images=4)
    monkeypatch.setenv("RANK", "1")  # another DDP process (torchrun sets RANK)
    assert mon.step(tuned, 0) is None and mon.close()["evaluations"] == 0
    assert not (tmp_path / "monitor.jsonl").exists()
    assert not (tmp_path / "monitor_summary.json").exists()
    monkeypatch.setenv("RANK", "0")
    assert mon.step(tuned, 0) is not None and len(read_monitor(tmp_path)) == 1


def test_distraction_metric_is_eq4_on_fixed_composites(data_root, models, tmp_path):
    from transferscope.analyses.distraction import distraction
    from transferscope.engine.attribution import gradcam_batch
    from transferscope.engine.inference import default_transform

    source, tuned = models
    mon = _monitor(data_root, source, tmp_path, target_images=6, source_images=6,
                   metrics=("distraction",), composites=5)
    tuned.train()
    modes = {n: m.training for n, m in tuned.named_modules()}
    first = mon.step(tuned, 0)
    assert {n: m.training for n, m in tuned.named_modules()} == modes
    assert all(p.grad is None for p in tuned.parameters())
    probe = mon._fixed["composites"]
    comp = probe.data
    assert len(comp) == 5 and len(set(comp.items[:, 0].tolist())) == 5  # one per background
    x, _ = probe.tensors(default_transform(tuned, comp, SIZE))
    ref = distraction(gradcam_batch(tuned, x, None),
                      gradcam_batch(source, x, comp.background_labels), comp.boxes, comp.size)
    got = first["metrics"]["distraction/mean"]
    assert got == pytest.approx(float(ref[torch.isfinite(ref)].mean()), abs=1e-9)
    assert first["intervals"]["distraction/mean"]["unit"] == "background image"

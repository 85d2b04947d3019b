"""Models by name (timm:, torchvision:, hf:), block layer groups, builder specs, preprocessing."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torchvision
from torch import nn

from transferscope.data.transforms import Normalization, describe_transform, eval_transform
from transferscope.errors import ConfigError, ModelError
from transferscope.models import (check_model_name, create_model, load_model, load_weights_into,
                                  save_model, wrap_module)
from transferscope.models.groups import auto_groups

# (name, input size): random init, small inputs; ViT/DeiT built for the size they are run at
ARCHS = [
    ("timm:resnet18", 64), ("timm:vit_tiny_patch16_224", 32), ("timm:convnext_atto", 64),
    ("timm:efficientnet_b0", 64), ("timm:mobilenetv3_small_050", 64),
    ("timm:deit_tiny_patch16_224", 32), ("timm:regnetx_002", 64), ("timm:resnet10t", 64),
    ("torchvision:resnet18", 64), ("torchvision:mobilenet_v3_small", 64),
    ("torchvision:efficientnet_b0", 64), ("torchvision:shufflenet_v2_x0_5", 64),
]


def _build(name, size, n=3):
    torch.manual_seed(0)
    return create_model(name, n, init="random", image_size=size).eval()


@pytest.mark.parametrize("name,size", ARCHS)
def test_external_model_interface_groups_and_roundtrip(name, size, tmp_path):
    m = _build(name, size)
    x = torch.randn(2, 3, size, size)
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features)
    out = m(x)
    assert out.shape == (2, 3) and torch.allclose(out, m.forward_head(feats))
    # layer groups: one per block, unique names, every parameter exactly once
    groups = m.layer_groups()
    names = [g.name for g in groups]
    assert len(set(names)) == len(names) and groups[-1].is_classifier
    assert len(groups) >= 5, names  # per block, not per top-level child
    owned = [p for g in groups for p in g.parameter_names(m)]
    assert sorted(owned) == sorted(n for n, _ in m.named_parameters())
    for g in groups:
        assert isinstance(m.get_submodule(g.output_module), nn.Module)
    # saved with its builder spec: load_model rebuilds it with no Python
    save_model(m, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors").eval()
    assert back.arch == name and back.norm == m.norm and back.default_size == m.default_size
    assert torch.equal(back(x), out) and back.weights_hash() == m.weights_hash()


@pytest.mark.parametrize("name,mean,interp,crop", [
    ("timm:vit_tiny_patch16_224", (0.5, 0.5, 0.5), "bicubic", 0.9),
    ("timm:resnet18", (0.485, 0.456, 0.406), "bicubic", 0.95),
    ("torchvision:efficientnet_b0", (0.485, 0.456, 0.406), "bicubic", 224 / 256),
    ("torchvision:resnet18", (0.485, 0.456, 0.406), "bilinear", 224 / 256),
])
def test_preprocessing_comes_from_the_model(name, mean, interp, crop):
    m = create_model(name, 2, image_size=32 if "vit" in name else None)
    assert m.norm.mean == pytest.approx(mean) and m.norm.interpolation == interp
    assert m.norm.crop_pct == pytest.approx(crop)
    t = describe_transform(eval_transform(m.norm, 64))
    assert (interp == "bicubic") == ("BICUBIC" in t)
    assert f"size=[{round(64 / crop)}]" in t  # resize then centre-crop by the model's crop_pct


def test_preprocessing_override_changes_the_transform_and_the_spec(tmp_path):
    m = create_model("timm:resnet18", 2, preprocessing={"mean": [0.5] * 3, "crop_pct": 1.0})
    assert m.norm.mean == (0.5, 0.5, 0.5) and m.norm.std == pytest.approx((0.229, 0.224, 0.225))
    save_model(m, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").norm == m.norm
    with pytest.raises(ModelError, match="unknown keys"):
        create_model("timm:resnet18", 2, preprocessing={"average": 1})
    with pytest.raises(ModelError, match="crop_pct"):
        create_model("timm:resnet18", 2, preprocessing={"crop_pct": 2})


def test_vgg_gets_one_group_per_convolution():
    net = torchvision.models.vgg11()
    groups = auto_groups(net)
    convs = [n for n, mod in net.named_modules() if isinstance(mod, nn.Conv2d)]
    assert [g.name for g in groups][:len(convs)] == convs
    assert [g.name for g in groups][len(convs):] == ["classifier.0", "classifier.3",
                                                     "classifier.6"]  # not split off here


def test_vit_embedding_parameters_join_the_first_group():
    m = _build("timm:vit_tiny_patch16_224", 32)
    first = m.layer_groups()[0]
    assert {"backbone.cls_token", "backbone.pos_embed"} <= set(first.parameter_names(m))
    assert m.num_prefix_tokens == 1 and m.fixed_size == 32


def test_check_model_name_is_one_line_and_helpful(tmp_path):
    for ok in ("resnet18", "timm:resnet18", "torchvision:mobilenet_v3_small"):
        assert check_model_name(ok) == ok
    cases = [("resnet9000", "unknown model"), ("timm/convnext_tiny", "timm:convnext_tiny"),
             ("timm:resnet9000", "unknown timm model"),
             ("torchvision:resnet9000", "unknown torchvision"),
             (f"hf:{tmp_path}", "config.json")]
    for bad, msg in cases:
        with pytest.raises(ConfigError, match=msg) as err:
            check_model_name(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        create_model("timm:not_a_model")


def test_pretrained_without_internet_is_one_line_model_error(monkeypatch):
    import timm

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")
        return real(*args, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="--init random") as err:
        create_model("timm:resnet18", 2, init="imagenet")
    assert "\n" not in str(err.value)

    def tv_offline(name, weights=None, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.models, "get_model", tv_offline)
    with pytest.raises(ModelError, match="torchvision:resnet18"):
        create_model("torchvision:resnet18", 2, init="pretrained")


def test_pretrained_weights_from_the_hub_are_used(monkeypatch):
    """With internet, timm's own weights are loaded (hub mocked with known weights)."""
    import timm

    real = timm.create_model
    torch.manual_seed(3)
    hub = real("resnet18")

    def fake(name, pretrained=False, **kwargs):
        net = real(name, **kwargs)
        if pretrained:
            net.load_state_dict(hub.state_dict())
        return net

    monkeypatch.setattr(timm, "create_model", fake)
    src = create_model("timm:resnet18", init="imagenet")
    assert torch.equal(src.head.fc.weight, hub.fc.weight)
    tgt = create_model("timm:resnet18", 2, init="imagenet")
    assert torch.equal(tgt.backbone.layer3[0].conv1.weight, hub.layer3[0].conv1.weight)
    assert tgt.num_classes == 2 and tgt.builder["init"] == "imagenet"


def test_init_from_native_files(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    native = timm.create_model("convnext_atto", num_classes=4).eval()  # head.norm + head.fc
    save_file(native.state_dict(), tmp_path / "c.safetensors")
    torch.save(native.state_dict(), tmp_path / "c.pt")
    x = torch.randn(1, 3, 64, 64)
    for f in ("c.safetensors", "c.pt"):
        m = create_model("timm:convnext_atto", 4, init=tmp_path / f).eval()
        assert torch.allclose(m(x), native(x), atol=1e-5)
    two = create_model("timm:convnext_atto", 2, init=tmp_path / "c.pt")  # head skipped
    assert torch.equal(two.backbone.stem[0].weight, native.stem[0].weight)


def test_wrap_leaves_the_module_alone_and_round_trips(tmp_path):
    import timm

    net = torchvision.models.mobilenet_v3_small(num_classes=7).eval()
    x = torch.randn(1, 3, 64, 64)
    expected = net(x)
    m = wrap_module(net).eval()  # head found: the last nn.Linear
    assert isinstance(net.classifier[3], nn.Linear) and torch.equal(net(x), expected)
    assert m.arch == "torchvision:mobilenet_v3_small" and torch.allclose(m(x), expected)
    save_model(m, tmp_path / "tv.safetensors")
    assert torch.equal(load_model(tmp_path / "tv.safetensors").eval()(x), m(x))

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=5).eval()
    w = wrap_module(vit).eval()
    x32 = torch.randn(1, 3, 32, 32)
    assert w.arch == "timm:vit_tiny_patch16_224" and w.norm.mean == (0.5, 0.5, 0.5)
    assert torch.allclose(w(x32), vit(x32), atol=1e-5) and isinstance(vit.head, nn.Linear)
    save_model(w, tmp_path / "vit.safetensors")
    back = load_model(tmp_path / "vit.safetensors").eval()
    assert back.fixed_size == 32 and torch.equal(back(x32), w(x32))


def test_wrapped_custom_module_needs_python_and_says_so(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.body(x))

    with pytest.warns(UserWarning, match="ImageNet mean/std"):
        m = wrap_module(Net())
    path = tmp_path / "custom.safetensors"
    save_model(m, path)
    with pytest.raises(ModelError, match="custom nn.Module") as err:
        load_model(path)
    assert "Net" in str(err.value) and "\n" not in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_weights_into(wrap_module(Net()), path)
    assert again.weights_hash() == m.weights_hash()


def test_hugging_face_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    net = transformers.ViTForImageClassification(cfg).eval()
    net.save_pretrained(tmp_path / "vit")
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3,
                                               image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(tmp_path / "vit")
    m = create_model(f"hf:{tmp_path / 'vit'}", init="pretrained").eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x), net(pixel_values=x).logits, atol=1e-5)  # ImageClassifierOutput
    assert m.norm == Normalization((0.5,) * 3, (0.5,) * 3, "bicubic", 1.0) and m.default_size == 32
    names = [g.name for g in m.layer_groups()]  # vit.layers.N (transformers 5) or
    assert len(names) == 5 and names[0] == "vit.embeddings"  # vit.encoder.layer.N (4.x)
    assert names[1].endswith(".0") and names[2].endswith(".1") and names[3] == "vit.layernorm"
    owned = [p for g in m.layer_groups() for p in g.parameter_names(m)]
    assert sorted(owned) == sorted(n for n, _ in m.named_parameters())
    save_model(m, tmp_path / "hf.safetensors")
    from transferscope._io import load_tensors

    meta_builder = json.loads(load_tensors(tmp_path / "hf.safetensors")[1]["transferscope_builder"])
    assert meta_builder["source"] == "hf" and meta_builder["hf_config"]["hidden_size"] == 32
    (tmp_path / "vit" / "config.json").unlink()  # rebuilt from the saved spec, not the folder
    assert torch.equal(load_model(tmp_path / "hf.safetensors").eval()(x), m(x))


# ----------------------------------------------------------------------------- token models
@pytest.mark.parametrize("name,size,grid", [
    ("timm:vit_tiny_patch16_224", 64, 4), ("timm:vit_tiny_patch16_224", 32, 2),
    ("timm:deit_tiny_patch16_224", 48, 3), ("timm:convnext_atto", 64, 2),
    ("timm:resnet18", 64, 2), ("torchvision:mobilenet_v3_small", 64, 2),
    ("timm:efficientnet_b0", 64, 2),
])
def test_gradcam_map_shape_on_token_and_conv_models(name, size, grid):
    from transferscope.engine.attribution import cam_layer, gradcam_batch

    m = _build(name, size)
    layer = cam_layer(m)
    if "vit" in name or "deit" in name:
        assert layer == "backbone.blocks.11.norm1"  # patch tokens, class token dropped
    x = torch.randn(3, 3, size, size)
    cam, logits = gradcam_batch(m, x, None, layer, return_logits=True)
    assert cam.shape == (3, grid, grid) and torch.isfinite(cam).all() and (cam >= 0).all()
    with torch.no_grad():
        assert torch.allclose(logits, m(x), atol=1e-5)


def test_token_map_drops_prefix_tokens_in_order():
    from transferscope.engine.attribution import to_spatial

    n, side, d, prefix = 2, 3, 4, 5  # e.g. class token + 4 register tokens
    patches = torch.arange(n * side * side * d, dtype=torch.float).reshape(n, side * side, d)
    tokens = torch.cat([torch.full((n, prefix, d), -1.0), patches], 1)
    out = to_spatial(tokens, nn.LayerNorm(d), prefix)
    assert out.shape == (n, d, side, side)
    assert torch.equal(out[1, 2, 0, 1], patches[1, 1, 2])  # token (row 0, col 1) channel 2
    assert torch.equal(to_spatial(tokens, nn.LayerNorm(d)), out)  # prefix inferred: 14 - 9
    with pytest.raises(ConfigError, match="square"):
        to_spatial(torch.zeros(1, 7, d), nn.LayerNorm(d), 1)


def test_token_activations_pool_over_tokens_and_cka_compares_blocks():
    from transferscope.analyses.cka import linear_cka
    from transferscope.engine.inference import capture

    m = _build("timm:vit_tiny_patch16_224", 32)
    mods = {"b0": m.get_submodule("backbone.blocks.0"),
            "b11": m.get_submodule("backbone.blocks.11")}
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad(), capture(m, mods, "avg") as avg, capture(m, mods, "none") as full:
        m(x)
    assert avg["b0"][0].shape == (6, 192) and full["b0"][0].shape == (6, 5, 192)
    assert torch.allclose(avg["b0"][0], full["b0"][0].mean(1))
    assert linear_cka(full["b0"][0], full["b0"][0]) == pytest.approx(1.0)
    assert 0.0 <= linear_cka(full["b0"][0], full["b11"][0]) <= 1.0


def test_spectra_say_plainly_when_a_model_has_few_convs():
    from transferscope.analyses import spectra

    m = _build("timm:vit_tiny_patch16_224", 32)
    res = spectra.spectra_tables({"vit": m}, 32, include_linear=False)  # the convs alone: fast
    assert res.summary["vit"]["num_conv_layers"] == 1
    assert any("few convolutional layers in vit (1)" in n for n in res.notes)


def test_models_doc_study_example_parses():
    """The study file of docs/models.md (moved there from the README) parses."""
    import re
    from pathlib import Path

    from transferscope.studies.spec import parse_study

    doc = (Path(__file__).parents[2] / "docs" / "models.md").read_text()
    section = doc[doc.index("## Examples"):]
    spec = parse_study(re.search(r"```toml\n(.*?)```", section, re.S).group(1), "docs/models.md")
    assert spec.models[0].arch == "timm:vit_tiny_patch16_224" and spec.image_size == 64


def test_cli_model_file_that_is_a_plain_checkpoint_gets_a_cli_hint(tmp_path, capsys):
    from transferscope.cli import main

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "my.pt")
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "d" / c / "0.png")
    assert main(["evaluate", "--model", str(tmp_path / "my.pt"), "--data", str(tmp_path / "d"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--model ARCH --init" in err and "wrap_module" not in err and err.count("\n") == 1
    assert main(["evaluate", "--model", "timm/resnet18", "--data", "x", "--device", "cpu"]) == 2
    assert "did you mean timm:resnet18" in capsys.readouterr().err


def test_weight_space_analyses_run_per_block_on_a_vit():
    from transferscope.analyses.barriers import evaluate, evaluate_path
    from transferscope.analyses.distances import layer_distances

    a, b = _build("timm:vit_tiny_patch16_224", 32), _build("timm:vit_tiny_patch16_224", 32)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    df = layer_distances(a, b, a)
    assert list(df["layer"])[:3] == ["patch_embed", "blocks.0", "blocks.1"]
    total = sum(p.numel() for p in a.parameters())  # the last row is the whole network
    assert df["n_params"].iloc[:-1].sum() == df["n_params"].iloc[-1] == total
    full = sum(float((pa - pb).detach().pow(2).sum())
               for pa, pb in zip(a.parameters(), b.parameters()))
    assert float((df["l2"].iloc[:-1] ** 2).sum()) == pytest.approx(full, rel=1e-4)
    loader = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1]))]
    path = evaluate_path(a, a.state_dict(), b.state_dict(), [0.0, 1.0], loader)
    assert path["loss"].iloc[0] == pytest.approx(evaluate(a, loader)["loss"], rel=1e-5)
    assert path["loss"].iloc[1] == pytest.approx(evaluate(b, loader)["loss"], rel=1e-5)


def test_train_a_timm_model_on_a_csv_records_its_preprocessing(tiny_split, tmp_path):
    from transferscope.engine import TrainConfig, get_recipe, load_run, train

    rows = ["path,label,split"] + [f"{p.relative_to(tiny_split)},{p.parent.name},"
                                   f"{p.parent.parent.name}"
                                   for p in sorted(tiny_split.glob("*/*/*")) if p.is_file()]
    (tiny_split / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = TrainConfig(arch="timm:mobilenetv3_small_050", init="random",
                      data=str(tiny_split / "labels.csv"),
                      recipe=get_recipe("quick", epochs=1, image_size=32, batch_size=8))
    res = train(cfg, tmp_path / "run", device="cpu")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["preprocessing"]["interpolation"] == "bicubic"
    assert config["builder"]["source"] == "timm" and config["builder"]["num_classes"] == 2
    back = load_run(tmp_path / "run")
    assert back.arch == "timm:mobilenetv3_small_050" and back.class_names == ["ants", "bees"]
    assert back.weights_hash() == res.model.weights_hash()


def test_models_command_lists_the_sources(capsys):
    from transferscope.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "timm:<name>" in out and "hf:<folder>" in out
    assert "torchvision:<name>" in out


def test_swin_groups_are_stage_blocks_and_its_cam_is_a_map():
    from transferscope.engine.attribution import cam_layer, gradcam_batch

    m = _build("timm:swin_tiny_patch4_window7_224", None)  # needs its 224 px input
    names = [g.name for g in m.layer_groups()]
    assert names[:4] == ["patch_embed", "layers.0.blocks.0", "layers.0.blocks.1",
                         "layers.1.downsample"] and names[-2:] == ["norm", "classifier"]
    owned = [p for g in m.layer_groups() for p in g.parameter_names(m)]
    assert sorted(owned) == sorted(n for n, _ in m.named_parameters())
    cam = gradcam_batch(m, torch.randn(1, 3, 224, 224), None, cam_layer(m))
    assert cam.shape == (1, 7, 7)  # channels-last (N, H, W, C) tokens of the last stage

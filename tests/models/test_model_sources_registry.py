"""Adding a model source is one registration: a toy ``mylib:`` source then works wherever a
model name does (create, check, save and load back, `transferscope models`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferscope.errors import ConfigError
from transferscope.models import create_model, load_model, save_model
from transferscope.models.registry import check_model_name
from transferscope.models.sources import MODEL_SOURCES, SOURCES, assemble, register_source
from transferscope.data.transforms import IMAGENET_NORM


def _build(name, num_classes, image_size, pretrained, spec):
    width = int(name.removeprefix("cnn"))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(width, 7))
    return assemble(net, "4", arch=f"mylib:{name}", norm=IMAGENET_NORM, default_size=32,
                    builder={"source": "mylib", "name": name})


def _check(name):
    if not name.startswith("cnn"):
        raise ConfigError(f"unknown mylib model {name!r}; mylib has cnn<width>")


@pytest.fixture
def mylib():
    register_source("mylib", "mylib:cnn<width>  a toy source", _build, _check)
    yield
    MODEL_SOURCES.pop("mylib")


def test_a_registered_source_works_everywhere(mylib, tmp_path, capsys):
    assert "mylib" in SOURCES and SOURCES["mylib"].startswith("mylib:")
    m = create_model("mylib:cnn5", 3)
    assert (m.arch, m.num_classes, m.num_features) == ("mylib:cnn5", 3, 5)
    assert check_model_name("mylib:cnn5") == "mylib:cnn5"
    with pytest.raises(ConfigError, match="mylib has cnn<width>"):
        check_model_name("mylib:rnn")
    save_model(m, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    assert back.arch == "mylib:cnn5" and back.weights_hash() == m.weights_hash()
    from transferscope.cli import main

    assert main(["models"]) == 0
    assert "mylib:cnn<width>" in capsys.readouterr().out


def test_an_unregistered_prefix_gets_the_list(tmp_path):
    with pytest.raises(ConfigError, match="timm:<...>, torchvision:<...>, hf:<...>"):
        check_model_name("nolib")

"""Shared helpers in one place each: eval mode, layer resolution, the CKA accumulator, the
figure helper and seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferscope.analyses._figures import subplots
from transferscope.analyses._weights import seed_of, state_of
from transferscope.analyses.cka import LinearCKA, linear_cka
from transferscope.engine.modes import eval_mode
from transferscope.errors import ConfigError
from transferscope.models import create_model
from transferscope.models.base import resolve_layers


def test_eval_mode_restores_each_model_also_on_errors():
    a, b = nn.Linear(2, 2).train(), nn.Linear(2, 2).eval()
    with eval_mode(a, b):
        assert not a.training and not b.training
    assert a.training and not b.training
    with pytest.raises(RuntimeError):
        with eval_mode(a):
            raise RuntimeError("boom")
    assert a.training


def test_resolve_layers_for_groups_paths_and_plain_modules():
    m = create_model("baseline_cnn", 2, image_size=32)
    first = m.layer_groups()[0]
    got = m.resolve_layers([first.name, "head"])
    assert got[first.name] is m.get_submodule(first.output_module) and got["head"] is m.head
    plain = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert resolve_layers(plain, ["0"])["0"] is plain[0]
    with pytest.raises(ConfigError, match="neither a layer group of baseline_cnn"):
        m.resolve_layers(["nope"])


def test_cka_accumulator_reset_and_blocks():
    g = torch.Generator().manual_seed(0)
    x, y, z = (torch.randn(12, 3, generator=g) for _ in range(3))
    acc = LinearCKA()
    acc.update(x, y)
    acc.reset()
    assert acc.n == 0 and acc.compute() != acc.compute()  # NaN after reset
    acc.update(x[:5], z[:5])
    acc.update(x[5:], z[5:])
    assert acc.compute() == pytest.approx(linear_cka(x, z), abs=1e-10)
    both = LinearCKA()
    both.update(torch.cat([x, y], 1), torch.cat([z, x], 1))
    blocks = both.compute_blocks([3, 3], [3, 3])
    assert blocks[0][1] == pytest.approx(1.0) and blocks[1][0] == pytest.approx(
        linear_cka(y, z), abs=1e-10)


def test_figure_helper_leaves_pyplot_and_backend_alone():
    import matplotlib

    backend = matplotlib.get_backend()
    fig, axes = subplots(1, 2, figsize=(2, 1))
    assert type(fig).__name__ == "Figure" and len(axes) == 2 and fig.canvas is not None
    assert matplotlib.get_backend() == backend


def test_seed_and_state_helpers():
    assert seed_of(3, 1) == seed_of(3, 1) != seed_of(1, 3)
    lin = nn.Linear(1, 1)
    assert state_of(lin).keys() == lin.state_dict().keys()
    assert state_of({"w": 1}) == {"w": 1}

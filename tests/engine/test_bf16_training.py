"""bf16 training (issue 17): autocast forward, fp32 weights; old runs still resume."""

from __future__ import annotations

import json

import pytest
import torch

from transferscope.engine import TrainConfig, get_recipe, train
from transferscope.errors import ConfigError


def _config(root, precision="fp32", epochs=3):
    return TrainConfig(arch="baseline_cnn", init="random", data=str(root), seed=0,
                       precision=precision,
                       recipe=get_recipe("paper002", epochs=epochs, image_size=32,
                                         batch_size=4, lr=0.01))  # SGD: a smooth path


def test_bf16_training_runs_in_bfloat16_learns_and_keeps_fp32_weights(tiny_split, tmp_path,
                                                                     monkeypatch):
    seen = []
    real = torch.nn.functional.conv2d

    def spy(x, w, *a, **k):  # the dtype the convolutions compute in
        out = real(x, w, *a, **k)
        if torch.is_grad_enabled():
            seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    bf16 = train(_config(tiny_split, "bf16"), tmp_path / "bf16")
    monkeypatch.setattr(torch.nn.functional, "conv2d", real)
    fp32 = train(_config(tiny_split), tmp_path / "fp32")
    assert seen and set(seen) == {torch.bfloat16}  # every training convolution
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert bf16.metrics[-1]["val_acc"] == fp32.metrics[-1]["val_acc"]
    assert bf16.model.weights_hash() != fp32.model.weights_hash()  # really another precision
    # the same path up to rounding: training losses within 2 %, weights close
    for a, b in zip(bf16.metrics, fp32.metrics):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.02 * b["train_loss"], (a, b)
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])
    assert (flat(bf16.model) - flat(fp32.model)).norm() < 0.02 * flat(fp32.model).norm()
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())["config"]
    assert cfg["precision"] == "bf16"


def test_runs_started_before_the_precision_setting_still_resume(tiny_split, tmp_path):
    train(_config(tiny_split, epochs=1), tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    del saved["config"]["precision"]  # as written before the setting existed
    path.write_text(json.dumps(saved))
    assert len(train(_config(tiny_split, epochs=1), tmp_path / "old", resume=True).metrics) == 1
    with pytest.raises(ConfigError, match="precision"):
        train(_config(tiny_split, "bf16", epochs=1), tmp_path / "old", resume=True)
    with pytest.raises(Exception, match="fp16"):
        _config(tiny_split, "fp8")
    with pytest.raises(ConfigError, match="precision fp16 needs a GPU"):  # CUDA only
        train(_config(tiny_split, "fp16", epochs=1), tmp_path / "fp16", device="cpu")
    assert not (tmp_path / "fp16").exists()

"""What a training run keeps on disk (issue 16): final weights, theta_r, the checkpoints asked
for and the last one for resuming - and resuming and checkpoint-transfer still work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from transferscope.engine import TrainConfig, get_recipe, load_run, train
from transferscope.errors import ConfigError


def _config(root, epochs=3, arch="baseline_cnn", init="random"):
    return TrainConfig(arch=arch, init=init, data=str(root), seed=0,
                       recipe=get_recipe("paper000-scratch" if arch == "baseline_cnn" else
                                         "quick", epochs=epochs, image_size=32, batch_size=4,
                                         lr=1e-3))


def _files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*")  # not the writer lock
            if p.is_file() and not p.name.startswith(".transferscope.lock")}


def _disk_bytes(run: Path) -> int:
    """Bytes on disk, each hard-linked file once (what `du` counts)."""
    seen, total = set(), 0
    for p in run.rglob("*"):
        st = p.stat()
        if p.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


BASE = {"config.json", "data.json", "init_random.safetensors", "init.safetensors",
        "metrics.json", "timings.json", "model.safetensors", "checkpoints/state.pt"}


def test_default_run_keeps_final_theta_r_and_the_last_checkpoint(tiny_split, tmp_path):
    run = tmp_path / "run"
    res = train(_config(tiny_split), run)
    assert _files(run) == BASE | {"checkpoints/epoch_0003.safetensors"}
    # identical weights are one file: init = theta_r (random init), last epoch = final
    assert os.path.samefile(run / "init.safetensors", run / "init_random.safetensors")
    assert os.path.samefile(run / "model.safetensors", run / "checkpoints/epoch_0003.safetensors")
    assert load_run(run, "3").weights_hash() == res.model.weights_hash()
    linked = sum((run / f).stat().st_size for f in ("model.safetensors", "init.safetensors"))
    apparent = sum((run / f).stat().st_size for f in _files(run))
    assert apparent - _disk_bytes(run) == linked  # the two links cost nothing
    # every epoch on request, or the last N, or named epochs (+ the last)
    for keep, epochs, want in (("all", (), {1, 2, 3}), (2, (), {2, 3}), (None, [1], {1, 3}),
                               ("1", [2], {2, 3})):
        out = tmp_path / f"keep-{keep}-{epochs}"
        train(_config(tiny_split), out, keep_checkpoints=keep, keep_epochs=epochs)
        assert _files(out) - BASE == {f"checkpoints/epoch_{e:04d}.safetensors" for e in want}
        assert load_run(out).weights_hash() == res.model.weights_hash()  # same training
    with pytest.raises(ConfigError, match="keep_checkpoints 0"):
        train(_config(tiny_split), tmp_path / "bad", keep_checkpoints=0)


def test_fine_tuned_run_keeps_its_start_apart_from_theta_r(tiny_split, tmp_path):
    run = tmp_path / "ft"
    train(_config(tiny_split, 1, "efficientnet_lite0", "imagenet"), run)
    assert not os.path.samefile(run / "init.safetensors", run / "init_random.safetensors")
    assert load_run(run, "init").weights_hash() != load_run(run, "init_random").weights_hash()


def test_interrupted_run_holds_the_last_checkpoint_and_resumes(tiny_split, tmp_path,
                                                               monkeypatch):
    import transferscope.engine.training as tr

    full = train(_config(tiny_split, 3), tmp_path / "full").model.weights_hash()
    real, calls = tr._evaluate, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # killed in epoch 3, after epochs 1 and 2 were saved
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "_evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tiny_split, 3), tmp_path / "cut")
    monkeypatch.setattr(tr, "_evaluate", real)
    cut = tmp_path / "cut"
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == [
        "epoch_0002.safetensors", "state.pt"]
    assert train(_config(tiny_split, 3), cut, resume=True).model.weights_hash() == full
    assert _files(cut) == BASE | {"checkpoints/epoch_0003.safetensors"}


def test_checkpoint_transfer_finds_the_epochs_it_asked_for(tiny_split, tmp_path):
    from transferscope.cli import main
    from transferscope.studies.training_runs import run_checkpoint_transfer

    pre = tmp_path / "pre"
    assert main(["train", "--arch", "baseline_cnn", "--init", "random", "--data",
                 str(tiny_split), "--out", str(pre), "--recipe", "paper000-scratch",
                 "--epochs", "3",
                 "--image-size", "32", "--batch-size", "8", "--keep-epochs", "1"]) == 0
    assert _files(pre) - BASE == {"checkpoints/epoch_0001.safetensors",
                                  "checkpoints/epoch_0003.safetensors"}
    with pytest.raises(ConfigError, match="--keep-epochs 2"):
        run_checkpoint_transfer(pre, str(tiny_split), tmp_path / "ck", checkpoints=[2])
    ck = run_checkpoint_transfer(pre, str(tiny_split), tmp_path / "ck", checkpoints=[1, 3],
                                 image_size=32, epochs=1, batch_size=8)
    table = ck.tables["checkpoints"]
    assert list(table["pre-training epoch"]) == [0, 1, 3]
    metrics = json.loads((pre / "metrics.json").read_text())
    assert list(table["pre-training val accuracy"])[1:] == [metrics[0]["val_acc"],
                                                            metrics[2]["val_acc"]]
    # the fine-tuning runs it made keep only what they need too
    assert _files(tmp_path / "ck" / "runs" / "from-epoch0001") - BASE == {
        "checkpoints/epoch_0001.safetensors"}


def test_study_models_take_keep_checkpoints():
    from transferscope.studies.demo_toml import DEMO_TOML
    from transferscope.studies.spec import parse_study

    text = DEMO_TOML.replace("epochs = 15\n", "epochs = 15\nkeep_checkpoints = KEEP\n")
    spec = parse_study(text.replace("KEEP", '"all"'))
    assert [m.keep_checkpoints for m in spec.models][:2] == [None, "all"]
    assert parse_study(text.replace("KEEP", "3")).models[1].keep_checkpoints == 3
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        parse_study(text.replace("KEEP", "0"))

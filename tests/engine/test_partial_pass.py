"""An interrupted forward pass resumes where it stopped, with the result of an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from conftest import make_folder
from transferscope.data import image_folder
from transferscope.data.image_set import ImageSet
from transferscope.engine import ResultCache, cache_admin
from transferscope.engine.inference import predict, predict_many
from transferscope.engine.partial_pass import PartialPass
from transferscope.errors import ConfigError
from transferscope.models import create_model


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("baseline_cnn", 2, init="random", image_size=32)


def _count_decodes(monkeypatch) -> list[int]:
    decoded: list[int] = []
    for decoder in ("load_image", "load_tensor"):  # PIL or straight into a tensor
        original = getattr(ImageSet, decoder)
        monkeypatch.setattr(ImageSet, decoder, lambda self, i, *a, _f=original, **k:
                            decoded.append(i) or _f(self, i, *a, **k))
    return decoded


class _Interrupt:
    """Raises KeyboardInterrupt (Ctrl-C) in a module's forward at its ``at``-th call."""

    def __init__(self, module, at: int):
        self.calls, self.at = 0, at
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, _module, _args):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt


def test_chunks_round_trip_and_damage_drops_the_rest(tmp_path):
    cache = ResultCache(tmp_path)
    p = PartialPass(cache, ["a", "b"], n=10, batch_size=2, every_s=0)
    assert p.resume() == {} and p.done == 0
    for i in range(3):
        p.add({"logits": torch.full((2, 3), float(i)), "labels": torch.tensor([i, i])})
    q = PartialPass(cache, ["b", "a"], n=10, batch_size=2)  # key order does not matter
    got = q.resume()
    assert q.done == 6 and torch.equal(torch.cat(got["labels"]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert PartialPass(cache, ["a", "b"], n=10, batch_size=5).resume() == {}  # other batches
    assert PartialPass(cache, ["a"], n=10, batch_size=2).resume() == {}  # other entries
    chunks = sorted(q.folder.iterdir())
    assert [c.name for c in chunks] == ["000000000-000000002.safetensors",
                                        "000000002-000000004.safetensors",
                                        "000000004-000000006.safetensors"]
    raw = bytearray(chunks[1].read_bytes())
    raw[-3] ^= 0xFF  # one tensor value altered: its hash no longer matches
    chunks[1].write_bytes(bytes(raw))
    r = PartialPass(cache, ["a", "b"], n=10, batch_size=2)
    assert r.done == 0 and len(r.resume()["labels"]) == 1 and r.done == 2
    assert sorted(c.name for c in r.folder.iterdir()) == ["000000000-000000002.safetensors"]
    r.finish()
    assert not r.folder.exists()


def test_nothing_is_saved_before_the_interval_or_without_a_cache(tmp_path):
    p = PartialPass(ResultCache(tmp_path), ["k"], n=10, batch_size=2, every_s=3600)
    p.add({"x": torch.zeros(2)})
    assert not p.folder.exists()  # a short pass writes nothing
    p.save()  # ... unless it is interrupted
    again = PartialPass(ResultCache(tmp_path), ["k"], n=10, batch_size=2)
    assert again.resume()["x"][0].shape == (2,)
    off = PartialPass(ResultCache(tmp_path / "off", enabled=False), ["k"], 10, 2, every_s=0)
    off.add({"x": torch.zeros(2)})
    assert off.resume() == {} and not off.folder.exists()


def test_a_chunk_that_cannot_be_written_costs_the_resume_not_the_pass(tmp_path, caplog):
    blocker = tmp_path / "inference"
    blocker.write_text("a file where the cache's folder should be")
    p = PartialPass(ResultCache(blocker), ["k"], n=10, batch_size=2, every_s=0)
    p.add({"x": torch.zeros(2)})  # no exception: a warning, and no more attempts
    p.add({"x": torch.zeros(2)})
    assert p.done == 0 and not p.enabled
    assert [r.getMessage().count("cannot save the pass so far") for r in caplog.records] == [1]


def test_a_bad_interval_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERSCOPE_CHECKPOINT_SECONDS", "soon")
    with pytest.raises(ConfigError, match="TRANSFERSCOPE_CHECKPOINT_SECONDS='soon'"):
        PartialPass(ResultCache(tmp_path), ["k"], n=10, batch_size=2)


@pytest.mark.parametrize("layers", [(), ("conv2", "fc1")])
def test_an_interrupted_predict_resumes_with_identical_results(tmp_path, monkeypatch, layers):
    """Ctrl-C in the 4th batch of 6: the next predict decodes only the last 3 batches, and its
    logits, labels and activations equal an uninterrupted pass's bit for bit."""
    monkeypatch.setenv("TRANSFERSCOPE_CHECKPOINT_SECONDS", "0")
    data = image_folder(make_folder(tmp_path / "set", per_class=6))  # 12 images
    model = _model()
    cache = ResultCache(tmp_path / "c" / "inference")  # the default layout
    stop = _Interrupt(model.backbone, at=4)
    with pytest.raises(KeyboardInterrupt):
        predict(model, data, image_size=32, batch_size=2, layers=layers, pool="avg",
                cache=cache, num_workers=0, progress=False)
    stop.handle.remove()
    assert len(list((tmp_path / "c" / "inference" / "partial").rglob("*.safetensors"))) == 3
    [left] = [e for e in cache_admin.entries(tmp_path / "c") if e.kind == "partial-pass"]
    assert left.removable and left.size > 0  # `transferscope cache info` shows it
    decoded = _count_decodes(monkeypatch)
    resumed = predict(model, data, image_size=32, batch_size=2, layers=layers, pool="avg",
                      cache=cache, num_workers=0, progress=False)
    assert sorted(decoded) == list(range(6, 12))  # batches 1-3 were kept
    assert not list((tmp_path / "c" / "inference" / "partial").rglob("*"))  # chunks deleted
    whole = predict(model, data, image_size=32, batch_size=2, layers=layers, pool="avg",
                    cache=ResultCache(tmp_path / "fresh"), num_workers=0, progress=False)
    assert torch.equal(resumed.logits, whole.logits)
    assert torch.equal(resumed.labels, whole.labels)
    assert resumed.activations.keys() == whole.activations.keys()
    for name in whole.activations:
        assert torch.equal(resumed.activations[name], whole.activations[name])
    decoded.clear()  # the entry itself is now cached
    predict(model, data, image_size=32, batch_size=2, layers=layers, pool="avg", cache=cache,
            num_workers=0, progress=False)
    assert decoded == []


def test_an_interrupted_shared_pass_resumes_for_every_model(tmp_path, monkeypatch):
    """predict_many's one pass for two backbones, interrupted in its 5th batch: the rest is
    decoded once and both models' logits match those of separate, whole passes."""
    monkeypatch.setenv("TRANSFERSCOPE_CHECKPOINT_SECONDS", "0")
    data = image_folder(make_folder(tmp_path / "set", per_class=6))
    a, b = _model(0), _model(1)
    cache = ResultCache(tmp_path / "cache")
    stop = _Interrupt(b.backbone, at=5)  # a already ran the 5th batch: it is not kept
    with pytest.raises(KeyboardInterrupt):
        predict_many([a, b], data, image_size=32, batch_size=2, cache=cache, num_workers=0,
                     progress=False)
    stop.handle.remove()
    decoded = _count_decodes(monkeypatch)
    resumed = predict_many([a, b], data, image_size=32, batch_size=2, cache=cache,
                           num_workers=0, progress=False)
    assert sorted(decoded) == list(range(8, 12))
    for model, got in zip((a, b), resumed):
        whole = predict(model, data, image_size=32, batch_size=2, num_workers=0,
                        cache=ResultCache(tmp_path / "fresh"), progress=False)
        # two code paths (the shared pass vs predict's own): float32 sums may run in another
        # order on another CPU (AMD Zen 4: logits ~1e-5 apart), so within a stated tolerance
        torch.testing.assert_close(got.logits, whole.logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(got.labels, whole.labels)


def test_sigterm_ends_the_command_as_ctrl_c_does(tmp_path):
    """``kill`` / Slurm preemption: the console script turns SIGTERM into the Ctrl-C path
    (a pass saves its batches, locks go), says how to continue and exits with 143."""
    import subprocess
    import sys

    script = (
        "import os, signal, time\n"
        "import transferscope.cli as cli\n"
        "def app(args, prog_name):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
        "    finally:\n"
        "        open(os.environ['MARK'], 'w').write('cleaned up')\n"
        "cli.app = app\n"
        "cli.run()\n")
    mark = tmp_path / "mark"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ, "MARK": str(mark)})
    assert proc.returncode == 143, proc.stderr
    assert "interrupted; run the same command again" in proc.stderr
    assert mark.read_text() == "cleaned up"  # finally blocks ran: nothing left half-done

"""One writer at a time (issue 17): two real processes on one run directory or cache entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from transferscope._lock import LockedError, holder, writer_lock
from transferscope.engine import ResultCache, TrainConfig, get_recipe, predict, train
from transferscope.data import image_folder
from transferscope.models import create_model

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A training process that logs every epoch it runs (so a test sees which process ran which
# epoch) and whose n-th evaluation waits until the file ``<gate>n`` exists ("-": no waiting).
TRAINER = textwrap.dedent("""
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    import transferscope.engine.training as tr
    from transferscope.engine import TrainConfig, get_recipe, train
    data, out, log, gate = sys.argv[1:5]
    real, calls = tr._evaluate, []
    def slow(model, loader, channels_last):
        calls.append(1)
        while gate != "-" and not os.path.exists(f"{gate}{len(calls)}"):
            time.sleep(0.05)
        result = real(model, loader, channels_last)
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        return result
    tr._evaluate = slow
    cfg = TrainConfig(arch="baseline_cnn", init="random", data=data, seed=0,
                      recipe=get_recipe("paper000-scratch", epochs=3, image_size=32,
                                        batch_size=4, lr=1e-3))
    res = train(cfg, out, resume=True)
    print("HASH", res.model.weights_hash(), len(res.metrics), flush=True)
""")


def _config(root):
    return TrainConfig(arch="baseline_cnn", init="random", data=str(root), seed=0,
                       recipe=get_recipe("paper000-scratch", epochs=3, image_size=32,
                                         batch_size=4, lr=1e-3))


def _start(script: Path, *args, env=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, what: str, limit: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _epochs(path: Path) -> int:
    try:
        return len(json.loads(path.read_text()))
    except (OSError, ValueError):
        return 0


def test_second_writer_waits_then_finds_the_run_done_and_no_wait_names_the_holder(
        tiny_split, tmp_path):
    script, run, log = tmp_path / "trainer.py", tmp_path / "run", tmp_path / "epochs.log"
    script.write_text(TRAINER)
    gate = tmp_path / "go"
    first = _start(script, tiny_split, run, log, gate)  # holds the lock until the gate opens
    _wait_for(lambda: (holder(run) or {}).get("pid") == first.pid, "the first writer's lock")
    refused = subprocess.run(  # the CLI with no waiting: one line naming the holder, status 2
        [sys.executable, "-m", "transferscope.cli", "train", "--arch", "baseline_cnn", "--init",
         "random", "--data", str(tiny_split), "--out", str(run), "--resume", "--recipe",
         "paper000-scratch", "--epochs", "3", "--image-size", "32", "--batch-size", "4",
         "--lr", "1e-3"],
        env={**os.environ, "PYTHONPATH": SRC, "TRANSFERSCOPE_NO_WAIT": "1"},
        capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and f"pid {first.pid} on host" in line and "being written" in line
    second = _start(script, tiny_split, run, log, "-")
    line = second.stderr.readline()  # blocks until the second process says it waits
    assert f"waiting for {run}: it is being written by pid {first.pid} on host" in line
    for epoch in (1, 2, 3):
        Path(f"{gate}{epoch}").touch()
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    # every epoch ran exactly once, all in the first process; both report the same weights
    assert log.read_text().split() == [str(first.pid)] * 3
    assert out1.split()[1:] == out2.split()[1:] and out1.split()[2] == "3"
    assert holder(run) is None  # released: the info file is gone


def test_killed_holder_releases_the_lock_and_the_waiter_resumes_its_epochs(tiny_split, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trainer processes (sums in another order otherwise)
    try:
        reference = train(_config(tiny_split), tmp_path / "ref").model.weights_hash()
    finally:
        torch.set_num_threads(threads)
    script, run, log = tmp_path / "trainer.py", tmp_path / "run", tmp_path / "epochs.log"
    script.write_text(TRAINER)
    gate = tmp_path / "go"
    first = _start(script, tiny_split, run, log, gate)
    _wait_for(lambda: (holder(run) or {}).get("pid") == first.pid, "the first writer's lock")
    Path(f"{gate}1").touch()  # epoch 1 finishes; epoch 2's evaluation waits for ever
    _wait_for(lambda: _epochs(run / "metrics.json") == 1, "the first epoch's checkpoint")
    second = _start(script, tiny_split, run, log, "-")
    line = second.stderr.readline()
    assert f"waiting for {run}: it is being written by pid {first.pid} on host" in line
    os.kill(first.pid, signal.SIGKILL)  # no clean-up: the OS releases the lock
    first.wait(timeout=30)
    out2, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    pids = log.read_text().split()
    # epoch 1 by the killed process; epochs 2 and 3 (only) by the second, resumed
    assert pids[0] == str(first.pid) and pids[-2:] == [str(second.pid)] * 2
    assert pids.count(str(second.pid)) == 2
    assert out2.split()[1] == reference and out2.split()[2] == "3"
    with writer_lock(run, "test", wait=False):  # free again
        assert holder(run)["pid"] == os.getpid()


HOLDER = textwrap.dedent("""
    import sys, time, torch
    from transferscope.engine import ResultCache
    cache, key, seconds = ResultCache(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    width = int(sys.argv[4])
    with cache.writing(key):
        print("HOLDING", flush=True)
        time.sleep(seconds)
        cache.put(key, {"features": torch.full((12, width), 7.0),
                        "labels": torch.zeros(12, dtype=torch.long)})
""")


def test_second_process_on_a_cache_entry_waits_and_reads_it(tiny_folder, tmp_path):
    """A process computing a cache entry holds its lock; predict() in another one waits for
    it and then reads the entry instead of computing it beside it."""
    ds, cache = image_folder(tiny_folder), ResultCache(tmp_path / "cache")
    torch.manual_seed(0)
    model = create_model("baseline_cnn", 2, image_size=32)
    from transferscope.data.transforms import describe_transform, eval_transform

    key = cache.key(kind="features", weights=model.backbone_hash(), data=ds.digest,
                    transform=describe_transform(eval_transform(model.norm, 32)))
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = _start(script, tmp_path / "cache", key, 2.0, model.num_features)
    assert proc.stdout.readline().strip() == "HOLDING"
    with pytest.raises(LockedError, match=f"pid {proc.pid} on host"):
        with cache.writing(key, wait=False):
            pass
    t0 = time.monotonic()
    pred = predict(model, ds, image_size=32, cache=cache)
    assert time.monotonic() - t0 > 0.5 and proc.wait(timeout=30) == 0
    assert pred.from_cache and cache.stats()["misses"] == 0  # the holder's entry, not ours
    with torch.no_grad():  # the logits of the holder's features (all 7), not of the images
        assert torch.allclose(pred.logits, model.forward_head(torch.full((12, model.num_features),
                                                                         7.0)))


def test_locks_are_reentrant_in_one_process_and_exclusive_across(tmp_path):
    with writer_lock(tmp_path / "out", "outer"):
        with writer_lock(tmp_path / "out", "inner"):  # a study locking, then its audit
            assert holder(tmp_path / "out")["what"] == "outer"
        assert holder(tmp_path / "out")["what"] == "outer"
        child = subprocess.run(
            [sys.executable, "-c", "import sys; from transferscope._lock import writer_lock\n"
             "try:\n with writer_lock(sys.argv[1], wait=False): pass\n"
             "except Exception as e: print(e); sys.exit(3)", str(tmp_path / "out")],
            env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=60)
        assert child.returncode == 3 and f"pid {os.getpid()}" in child.stdout
    assert holder(tmp_path / "out") is None

"""torchrun with 2 gloo processes on CPU: sharded inference and data-parallel training.

The file is also the worker: ``python tests/test_distributed.py DATA OUT`` (one process) or
under ``torch.distributed.run --nproc_per_node=2``; each rank writes ``OUT/rank<R>.json``.
The tests launch it once per mode (module scope) and check what the ranks reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transferscope.engine.distributed import shard

HERE = Path(__file__).resolve()
ARGS = ["--arch", "baseline_cnn", "--init", "random", "--recipe", "paper000-scratch",
        "--epochs", "2", "--image-size", "32", "--batch-size", "4", "--lr", "1e-3"]


def _config(data: str):
    from transferscope.engine import TrainConfig, get_recipe

    return TrainConfig(arch="baseline_cnn", init="random", data=data, seed=0,
                       recipe=get_recipe("paper000-scratch", epochs=2, image_size=32,
                                         batch_size=4, lr=1e-3))


def _predict(data: Path, out: Path, res: dict) -> None:
    from transferscope._io import tensors_sha256
    from transferscope.data import image_folder
    from transferscope.engine import ResultCache, predict
    from transferscope.models import create_model

    cache = ResultCache(out / "cache")
    puts, real_put = [], cache.put
    cache.put = lambda *a, **k: (puts.append(1), real_put(*a, **k))
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, image_size=32, init="random")
    ds = image_folder(data / "train")  # 16 images, batches of 5: shards of 10 and 6
    kw = dict(image_size=32, layers=["stem", "head_conv"], pool="avg", batch_size=5, cache=cache)
    first = predict(model, ds, **kw)
    again = predict(model, ds, **kw)
    res["predict"] = {"sha": tensors_sha256({"logits": first.logits, "labels": first.labels,
                                             **first.activations}),
                      "n": len(first.logits), "puts": len(puts),
                      "cached_again": again.from_cache, "first_cached": first.from_cache}


def _grad_step(data: Path, res: dict) -> None:
    """One step on 2 ranks x batch 4 against one process x batch 8 from the same seed."""
    import copy

    from torch.utils.data import DataLoader

    from transferscope.data import eval_transform, image_folder
    from transferscope.engine import distributed
    from transferscope.models import create_model

    torch.manual_seed(0)
    ref = create_model("baseline_cnn", 2, image_size=32).eval()  # eval: no dropout draws
    mine = copy.deepcopy(ref)
    ds = image_folder(data / "train").with_transform(eval_transform(ref.norm, 32))
    g = torch.Generator().manual_seed(123)
    x, y = next(iter(DataLoader(ds, batch_size=8, shuffle=True, generator=g)))
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    xs, ys = next(iter(distributed.train_loader(ds, 4, 123)))
    step = distributed.data_parallel(mine)
    torch.nn.functional.cross_entropy(step(xs)[1], ys).backward()
    res["grad_diff"] = max((a.grad - b.grad).abs().max().item() / b.grad.abs().max().item()
                           for a, b in zip(mine.parameters(), ref.parameters()))


def _train(data: Path, out: Path, res: dict) -> None:
    import transferscope.engine.training as tr
    import transferscope.engine.training_steps as steps
    from transferscope.cli import main

    saves, real_save = [], steps.save_model
    steps.save_model = lambda *a, **k: (saves.append(1), real_save(*a, **k))[1]
    full = tr.train(_config(str(data)), out / "full")
    res["full"] = full.model.weights_hash()
    res["metrics"] = full.metrics
    res["saves"] = len(saves)
    res["cli_rc"] = main(["train", "--data", str(data), "--out", str(out / "cli"), *ARGS])
    res["cli"] = tr.load_run(out / "cli").weights_hash()
    real_eval, calls = tr._evaluate, []

    def dying(*a, **k):  # killed during epoch 2 on every rank, after epoch 1 was saved
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    tr._evaluate = dying
    try:
        tr.train(_config(str(data)), out / "cut")
    except KeyboardInterrupt:
        res["cut_epochs"] = len(json.loads((out / "cut" / "metrics.json").read_text()))
    tr._evaluate = real_eval
    res["resumed"] = tr.train(_config(str(data)), out / "cut", resume=True).model.weights_hash()


def _monitor(data: Path, out: Path, res: dict) -> None:
    """An AuditMonitor on a DDP-wrapped model: rank 0 computes and writes, rank 1 skips."""
    from transferscope.callbacks import AuditMonitor
    from transferscope.data import image_folder
    from transferscope.models import create_model

    torch.manual_seed(0)
    source = create_model("baseline_cnn", image_size=32)  # 1000-class head: M^s
    model = create_model("baseline_cnn", 2, image_size=32)
    model.backbone.load_state_dict(source.backbone.state_dict())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    mon = AuditMonitor(source, image_folder(data / "val"), source_data=None,
                       out=out / "monitor", image_size=32, target_images=6,
                       metrics=("target_accuracy", "distance_to_pretrained",
                                "cka_to_pretrained"))
    mon.step(ddp, epoch=0)
    x = torch.randn(4, 3, 32, 32)
    ddp(x).sum().backward()  # a real DDP step: gradients all-reduced over the ranks
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.1 * p.grad)
    mon.step(ddp, epoch=1)
    mon.close()
    torch.distributed.barrier()
    res["monitor"] = {"records": len(mon.history),
                      "lines": len((out / "monitor" / "monitor.jsonl").read_text().splitlines()),
                      "moved": mon.history[-1]["metrics"]["distance_to_pretrained/total"]
                      if mon.history else None}


def worker(data: Path, out: Path) -> None:
    from transferscope.engine import distributed

    torch.set_num_threads(1)
    world = distributed.setup()
    res: dict = {"world": world.size, "rank": world.rank}
    _predict(data, out, res)
    if world.size > 1:
        _grad_step(data, res)
        _train(data, out, res)
        _monitor(data, out, res)
    (out / f"rank{world.rank}.json").write_text(json.dumps(res))


def _launch(tmp: Path, data: Path, nproc: int) -> tuple[list[dict], Path]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERSCOPE_PROGRESS": "0",
           "TRANSFERSCOPE_DIST_BACKEND": "gloo", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("WORLD_SIZE", None)
    out = tmp / f"np{nproc}"
    out.mkdir()
    cmd = [sys.executable, str(HERE), str(data), str(out)]
    if nproc > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)], out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import conftest

    tmp = tmp_path_factory.mktemp("dist")
    data = tmp / "tinyset"
    conftest.make_folder(data / "train", per_class=8, seed=1)
    conftest.make_folder(data / "val", per_class=4, seed=2)
    return {n: _launch(tmp, data, n) for n in (1, 2)}


def test_shard_is_contiguous_and_batch_aligned():
    for n, b, w in [(16, 5, 2), (10, 4, 3), (3, 8, 2), (100, 7, 4)]:
        parts = [shard(n, b, r, w) for r in range(w)]
        assert [i for p in parts for i in p] == list(range(n))
        assert all(p.start % b == 0 for p in parts)


def test_rank_shares_make_up_the_single_process_batches():
    from torch.utils.data import DataLoader

    from transferscope.engine.distributed import RankShare

    n, b, w, seed = 13, 2, 3, 7
    single = list(DataLoader(range(n), batch_size=b * w, shuffle=True,
                             generator=torch.Generator().manual_seed(seed)))
    shares = [list(RankShare(n, seed, r, w)) for r in range(w)]
    assert len({len(s) for s in shares}) == 1 and sum(map(len, shares)) == 15  # 2 repeated
    for k, batch in enumerate(single[:-1]):  # full batches: the same images
        assert sorted(i for s in shares for i in s[k * b:(k + 1) * b]) == sorted(batch.tolist())


@pytest.mark.slow
def test_sharded_predict_writes_the_single_process_cache_entry(runs):
    (one,), out1 = runs[1]
    two, out2 = runs[2]
    assert [r["world"] for r in two] == [2, 2] and one["world"] == 1
    assert two[0]["predict"]["sha"] == two[1]["predict"]["sha"] == one["predict"]["sha"]
    assert two[0]["predict"]["n"] == 16 and not two[0]["predict"]["first_cached"]
    assert all(r["predict"]["cached_again"] for r in two)
    assert [r["predict"]["puts"] for r in two] == [1, 0]  # written once, by rank 0
    files = {p.relative_to(out1 / "cache"): p.read_bytes() for p in (out1 / "cache").rglob("*")
             if p.is_file() and p.suffix != ".lock"}  # the entry's writer-lock file aside
    assert len(files) == 1
    from transferscope._io import load_tensors

    for name, raw in files.items():  # same key (file name), same tensors, same metadata
        mine, meta = load_tensors(out2 / "cache" / name)
        ref, ref_meta = load_tensors(out1 / "cache" / name)
        assert meta == ref_meta and mine.keys() == ref.keys()
        assert all(torch.equal(mine[k], ref[k]) for k in ref)
        # byte for byte too, but for the order of the header's metadata map, which safetensors
        # writes from a hash map (it varies between two single-process runs as well)
        assert _data_bytes(out2 / "cache" / name) == _data_bytes(out1 / "cache" / name)


def _data_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


@pytest.mark.slow
def test_audit_monitor_under_ddp_rank_0_computes_and_writes(runs):
    r0, r1 = runs[2][0]
    assert r0["monitor"]["records"] == 2 and r1["monitor"]["records"] == 0
    assert r0["monitor"]["lines"] == r1["monitor"]["lines"] == 2  # one file, written once
    assert r0["monitor"]["moved"] > 0


@pytest.mark.slow
def test_ddp_training_is_deterministic_resumable_and_in_sync(runs):
    two, out = runs[2]
    r0, r1 = two
    assert r0["grad_diff"] < 1e-5 and r1["grad_diff"] < 1e-5  # 2 x B/2 == 1 x B, one step
    assert r0["full"] == r1["full"]  # both ranks hold the same weights
    def same(metrics):  # wall-clock seconds (if recorded) are each rank's own
        return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]

    assert same(r0["metrics"]) == same(r1["metrics"])  # all-reduced
    assert same(json.loads((out / "full" / "metrics.json").read_text())) == same(r0["metrics"])
    assert r0["saves"] > 0 and r1["saves"] == 0  # only rank 0 writes
    assert r0["cli_rc"] == r1["cli_rc"] == 0 and r0["cli"] == r0["full"]  # same seed, same run
    assert r0["cut_epochs"] == r1["cut_epochs"] == 1
    assert r0["resumed"] == r1["resumed"] == r0["full"]
    from transferscope.engine import load_run

    assert load_run(out / "full").weights_hash() == r0["full"]


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))

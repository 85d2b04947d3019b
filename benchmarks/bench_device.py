"""The prepared accelerator check of issue 17: one script, about 5-8 minutes on one GPU.

    python benchmarks/bench_device.py --device cuda [--images 50000] [--size 224]
        [--epochs 2] [--out DIR]

On a lent GPU machine run it through ``benchmarks/device_check.sh`` (which installs the
wheels the device image lacks and points the data root at a carried copy of hymenoptera);
``--device cpu --images 200`` runs the same steps here, as the test of this script.

1. **Peak matrix rates** of the device, measured here: the best of several square
   ``torch.matmul`` at fp32 (TF32 off), TF32 (on GPUs) and bf16, ``2 n^3`` FLOPs each,
   timed with the device synchronised.
2. **Scaling audit**: ``benchmarks/bench_scale.py --images N --sizes SIZE --device D``:
   ``audit-memory``'s retained knowledge, interference bias and lingering features on a
   synthetic ImageNet-like set of N JPEGs, with the bare forward measured in the same child;
   its JSON line lands in ``OUT/scale.jsonl``.
3. **Fine-tune**: efficientnet_lite0 (ImageNet weights) on hymenoptera with the demo's recipe
   (paper002, batch 32) for ``--epochs`` epochs at SIZE px, once per precision (fp32, bf16,
   and fp16 on GPUs), same seed. Per precision: seconds per epoch (training + validation),
   images per second, achieved GFLOP/s (3 x forward FLOPs per training image, 1 x per
   validation image, counted by ``torch.utils.flop_counter``) and its share of the measured
   peak of that precision (bf16/fp16 against the bf16 peak, fp32 against the TF32 peak on
   GPUs, where cuDNN's convolutions use TF32 by default), final validation accuracy.

Everything is printed and written to ``OUT/device.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_peak_flops import gflops_per_image, peak_matmul

HERE = Path(__file__).resolve().parent


def peak_rates(device: torch.device) -> dict[str, float]:
    """GFLOP/s: ``fp32`` (TF32 off), ``tf32`` (GPUs only) and ``bf16`` matmul peaks."""
    sizes = (4096, 8192) if device.type == "cuda" else (1024, 2048)
    saved = torch.backends.cuda.matmul.allow_tf32
    rates = {}
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        rates["fp32"] = max(peak_matmul(n, 5, device) for n in sizes)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            rates["tf32"] = max(peak_matmul(n, 5, device) for n in sizes)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    rates["bf16"] = max(peak_matmul(n, 5, device, torch.bfloat16) for n in sizes)
    return {k: round(v, 1) for k, v in rates.items()}


def scaling(device: str, images: int, size: int, root: str, out: Path) -> dict:
    """One ``bench_scale.py`` run (generation included) on ``device``; its JSON result."""
    jsonl = out / "scale.jsonl"
    jsonl.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "bench_scale.py"), "--images", str(images),
           "--sizes", str(size), "--device", device, "--root", root, "--json", str(jsonl)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, text=True)
    if proc.returncode:
        return {"error": f"bench_scale.py exited with {proc.returncode}"}
    result = json.loads(jsonl.read_text().splitlines()[-1])
    result["wall_s_with_generation"] = round(time.perf_counter() - t0, 1)
    return result


def train_gflops_per_epoch(size: int, n_train: int, n_val: int) -> float:
    """FLOPs of one epoch of the fine-tune: 3 x forward per training image (forward +
    backward), 1 x per validation image; forward FLOPs counted on one image."""
    from transferscope.models import create_model

    return gflops_per_image(create_model("efficientnet_lite0", 2).eval(), size) * (
        3 * n_train + n_val)


def finetune(device: str, precisions: list[str], epochs: int, size: int, peaks: dict) -> dict:
    """The demo's fine-tune once per precision, same seed; speed, utilisation, accuracy."""
    from transferscope.data import image_folder
    from transferscope.engine import TrainConfig, get_recipe, train

    n_train = len(image_folder("hymenoptera", "train"))
    n_val = len(image_folder("hymenoptera", "val"))
    gflops = train_gflops_per_epoch(size, n_train, n_val)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            cfg = TrainConfig(arch="efficientnet_lite0", init="imagenet", data="hymenoptera",
                              precision=precision, seed=0,
                              recipe=get_recipe("paper002", epochs=epochs, batch_size=32,
                                                image_size=size))
            res = train(cfg, f"{tmp}/{precision}", device=device)
            secs = json.loads(Path(f"{tmp}/{precision}/timings.json").read_text())
            # the first epoch pays start-up (workers, cuDNN autotuning): the rate is the best
            epoch_s = min(secs.values())
            peak = peaks["bf16"] if precision != "fp32" else peaks.get("tf32", peaks["fp32"])
            rows[precision] = {
                "epoch_s": [secs[k] for k in sorted(secs, key=int)],
                "images_per_s": round((n_train + n_val) / epoch_s, 1),
                "gflop_s": round(gflops / epoch_s, 1),
                "share_of_peak": round(gflops / epoch_s / peak, 5),
                "val_acc": res.metrics[-1]["val_acc"], "val_loss": res.metrics[-1]["val_loss"]}
            print(precision, json.dumps(rows[precision]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=50000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "ts-scale"))
    ap.add_argument("--out", default=os.environ.get("OUT") or "device-out")
    args = ap.parse_args()
    from transferscope.engine.device import resolve_device
    from transferscope.errors import ConfigError

    try:
        device = resolve_device(args.device)
    except ConfigError as err:
        sys.exit(f"bench_device.py: {err}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["TRANSFERSCOPE_PROGRESS"] = "0"
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "cpus": len(os.sched_getaffinity(0)),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report["peak_gflop_s"] = peak_rates(device)
    print(json.dumps(report), flush=True)
    report["scaling"] = scaling(str(device), args.images, args.size, args.root, out)
    print("scaling", json.dumps(report["scaling"]), flush=True)
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    report["finetune"] = finetune(str(device), precisions, args.epochs, args.size,
                                  report["peak_gflop_s"])
    (out / "device.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"written: {out / 'device.json'}")


if __name__ == "__main__":
    main()

"""bf16 training against fp32 on a short version of the demo's fine-tune (issue 17).

    python benchmarks/bench_bf16_training.py [--epochs 2] [--image-size 128]

efficientnet_lite0 (ImageNet weights) fine-tuned on hymenoptera with the demo's recipe
(paper002: SGD, cosine, batch 32) for a few epochs at 128 px, once with ``precision="fp32"``
and once with ``"bf16"`` (autocast forward; fp32 weights, loss and validation), same seed,
in one run of this script. Reports seconds per epoch (training + validation, from
timings.json) and the final validation accuracy and loss of each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from transferscope.engine import TrainConfig, get_recipe, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    os.environ["TRANSFERSCOPE_PROGRESS"] = "0"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16", "fp32", "bf16"):  # twice each, interleaved
            cfg = TrainConfig(arch="efficientnet_lite0", init="imagenet", data="hymenoptera",
                              precision=precision, seed=0,
                              recipe=get_recipe("paper002", epochs=args.epochs, batch_size=32,
                                                image_size=args.image_size))
            out = f"{tmp}/{precision}-{len(rows.get(precision, []))}"
            t0 = time.perf_counter()
            res = train(cfg, out)
            wall = time.perf_counter() - t0
            secs = json.load(open(f"{out}/timings.json"))
            rows.setdefault(precision, []).append({
                "wall_s": round(wall, 1), "epoch_s": [secs[k] for k in sorted(secs)],
                "val_acc": res.metrics[-1]["val_acc"], "val_loss": res.metrics[-1]["val_loss"],
                "train_loss": res.metrics[-1]["train_loss"]})
            print(precision, json.dumps(rows[precision][-1]), flush=True)
    best = {p: min(sum(r["epoch_s"]) for r in rs) for p, rs in rows.items()}
    print(json.dumps({"speedup_bf16": round(best["fp32"] / best["bf16"], 2), **best}))


if __name__ == "__main__":
    main()

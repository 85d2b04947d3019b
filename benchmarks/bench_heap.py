"""Page faults of the CPU forward pass with glibc's default heap settings and with
``engine._memory.tune_heap`` (issue 17), each in a fresh process, ratios in one run.

    python benchmarks/bench_heap.py [--size 224 --batch 5 --images 1000]

Per mode: efficientnet_lite0 features over ``--images`` constant images from a DataLoader in
the main process (no decoding: what is left is the model and the allocator), forward
images/s, system seconds, minor page faults and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def child(tuned: bool, size: int, batch: int, images: int) -> dict:
    import torch

    from transferscope.engine._memory import tune_heap
    from transferscope.engine.inference import _Features, forward_batch
    from transferscope.models import create_model

    if tuned:
        assert tune_heap()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    net = _Features(create_model("efficientnet_lite0", init="imagenet")).eval()
    net.to(memory_format=torch.channels_last)
    data = [torch.full((batch, 3, size, size), float(i % 7)) for i in range(4)]
    forward_batch(net, data[0])  # warm-up
    r0, fw, n = resource.getrusage(resource.RUSAGE_SELF), 0.0, 0
    while n < images:
        x = data[(n // batch) % 4].clone()  # a new batch tensor, as a loader makes
        t = time.perf_counter()
        forward_batch(net, x)
        fw += time.perf_counter() - t
        n += batch
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"tuned": tuned, "forward_img_s": round(n / fw, 1),
            "sys_s": round(r1.ru_stime - r0.ru_stime, 2),
            "minor_faults_per_image": round((r1.ru_minflt - r0.ru_minflt) / n),
            "peak_rss_gib": round(r1.ru_maxrss / 2**20, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--child", choices=("default", "tuned"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "tuned", args.size, args.batch, args.images)))
        return
    rows = []
    for mode in ("default", "tuned", "default", "tuned"):  # alternated: drift shows up
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--size",
                              str(args.size), "--batch", str(args.batch), "--images",
                              str(args.images)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout))
        print(json.dumps(rows[-1]), flush=True)
    speed = {m: sum(r["forward_img_s"] for r in rows if r["tuned"] == (m == "tuned")) / 2
             for m in ("default", "tuned")}
    print(f"tuned / default forward speed: {speed['tuned'] / speed['default']:.2f}x")


if __name__ == "__main__":
    main()

"""Cold vs cached inference: the same predict() request twice, measured in one run.

    python benchmarks/bench_inference_cache.py [--data hymenoptera --split val]

Prints both wall times and their ratio (issue 2 asks for >= 20x).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from transferscope.data import image_folder
from transferscope.engine import ResultCache, predict
from transferscope.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--data", default="hymenoptera")
    ap.add_argument("--split", default="val")
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = create_model(args.arch, 2, init="imagenet")
    image_folder(args.data, args.split)  # first scan fills the file index (hash + decode check)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResultCache(tmp)
        t0 = time.perf_counter()  # each timed call re-scans the folder, as a new process would
        data = image_folder(args.data, args.split)
        cold = predict(model, data, image_size=args.image_size, cache=cache, progress=False)
        t1 = time.perf_counter()
        data = image_folder(args.data, args.split)
        warm = predict(model, data, image_size=args.image_size, cache=cache, progress=False)
        t2 = time.perf_counter()
    assert warm.from_cache and torch.equal(cold.logits, warm.logits)
    cold_s, warm_s = t1 - t0, t2 - t1
    print(f"{args.arch} on {args.data}/{args.split} ({len(data)} images, {args.image_size}px)")
    print(f"cold  {cold_s:8.3f} s  ({len(data) / cold_s:.1f} img/s)")
    print(f"warm  {warm_s:8.3f} s  (folder scan + weights hash + cache key + verified read)")
    print(f"ratio {cold_s / warm_s:8.1f}x")


if __name__ == "__main__":
    main()

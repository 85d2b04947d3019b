"""Inference images/s per batch size (the basis of ``engine.inference.auto_batch_size``).

    flock /tmp/cpu.lock python benchmarks/bench_batch_size.py [--archs ...] [--sizes 128,224]

For each model and image size, 96 random images go through ``forward_batch`` (eval,
``inference_mode``, channels-last) in batches of 4 ... 48; best of 2 passes. ResNets use random
weights (no download here); efficientnet_lite0 its ImageNet weights.
"""

from __future__ import annotations

import argparse
import time

import torch

from transferscope.engine.inference import auto_batch_size, forward_batch
from transferscope.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="efficientnet_lite0,resnet18")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--batches", default="4,8,16,24,32,48")
    args = ap.parse_args()
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; images/s per batch size")
    for arch in args.archs.split(","):
        kw = {"init": "imagenet"} if arch.startswith("efficientnet") else {}
        m = create_model(arch, 1000, **kw).eval().to(memory_format=torch.channels_last)
        for size in sizes:
            x = torch.randn(96, 3, size, size)
            row = []
            for bs in batches:
                forward_batch(m, x[:bs])  # warm-up for this shape
                best = float("inf")
                for _ in range(2):
                    t0 = time.perf_counter()
                    for i in range(0, len(x), bs):
                        forward_batch(m, x[i:i + bs])
                    best = min(best, time.perf_counter() - t0)
                row.append(f"{bs}:{len(x) / best:.0f}")
            print(f"{arch:<20}{size:>4}px  {'  '.join(row)}   (auto: {auto_batch_size(size)})")


if __name__ == "__main__":
    main()

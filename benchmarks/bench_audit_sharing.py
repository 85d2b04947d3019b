"""The memory audit with shared forward passes vs each analysis recomputing its own,
and a cached re-run - all measured in one run on the same inputs.

    python benchmarks/bench_audit_sharing.py [--fine-tuned RUN_DIR] [--scratch RUN_DIR]
        [--source-limit 200] [--image-size 128]

Without run directories the fine-tuned model is EfficientNet-Lite0 with ImageNet weights and
an untrained 2-class head, and the scratch model a random baseline CNN: the forward passes
cost the same as for trained ones, which is all this benchmark measures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from transferscope.analyses import AuditContext
from transferscope.studies.memory import run_memory_audit
from transferscope.data import image_folder, source_images
from transferscope.data.views import ViewSet
from transferscope.engine import ResultCache, load_run
from transferscope.models import create_model


def build(args, cache: ResultCache) -> AuditContext:
    torch.manual_seed(0)  # the untrained heads must be the same in every mode
    ft = load_run(args.fine_tuned) if args.fine_tuned else \
        create_model("efficientnet_lite0", 2, init="imagenet")
    scratch = load_run(args.scratch) if args.scratch else \
        create_model("baseline_cnn", 2, image_size=args.image_size)
    samples = source_images("imagenet-samples")
    samples = samples.subset(range(0, len(samples), max(1, len(samples) // args.source_limit)))
    return AuditContext(create_model("efficientnet_lite0", init="imagenet"),
                        {"fine-tuned": ft, "scratch": scratch}, image_folder("hymenoptera", "val"),
                        {"imagenet-samples": ViewSet(samples, 2)}, image_size=args.image_size,
                        cache=cache, progress=False)


def timed(ctx, out):
    t0 = time.perf_counter()
    run_memory_audit(ctx, out, composite_params={"overlays_per_class": 5, "repeats": 1})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fine-tuned")
    ap.add_argument("--scratch")
    ap.add_argument("--source-limit", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.environ["TRANSFERSCOPE_PROGRESS"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        shared_cache = ResultCache(f"{tmp}/cache")
        ctx = build(args, shared_cache)
        shared = timed(ctx, f"{tmp}/shared")
        passes = shared_cache.misses
        rerun = timed(build(args, shared_cache), f"{tmp}/rerun")
        naive_ctx = build(args, ResultCache(enabled=False))
        naive = timed(naive_ctx, f"{tmp}/naive")
    n = len(ctx.source_data["imagenet-samples"])
    print(f"memory audit, {n} source views + {len(ctx.target_data)} target images, "
          f"{args.image_size}px, 8 analyses")
    print(f"shared cache    {shared:8.1f} s  ({passes} distinct forward/Grad-CAM passes)")
    print(f"no sharing      {naive:8.1f} s  (every analysis recomputes its passes)")
    print(f"cached re-run   {rerun:8.1f} s")
    print(f"ratio no-sharing / shared   {naive / shared:6.2f}x")
    print(f"ratio shared / cached re-run {shared / rerun:6.1f}x")


if __name__ == "__main__":
    main()

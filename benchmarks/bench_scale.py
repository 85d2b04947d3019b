"""How an audit's time and memory grow with the number of source images (issue 17).

    python benchmarks/bench_scale.py --images 1000,5000 --sizes 128,224 \
        [--root /tmp/ts-scale] [--workers auto|N] [--fast-decode] [--decoder auto|pil]
        [--device cpu|cuda]

1. Generates synthetic ImageNet-like JPEG sets (500 x 375 px, quality 90, about 85 kB each,
   in 1,000 wnid class folders) of N images under ``--root`` (kept between runs, never in the
   repository): low-frequency colour fields at three scales plus fine noise, so that the
   files are as costly to decode as photos of that size.
2. For every (N, image size) runs, in a fresh child process with an empty cache,
   ``audit-memory``'s retained knowledge, interference bias and lingering features for
   efficientnet_lite0 (ImageNet weights; M^t = that backbone, its first weight tensor scaled by
   1.001 so that it is a backbone of its own as a fine-tuned one is, with a 2-class head) on the
   synthetic set and hymenoptera/val, exactly as ``transferscope audit-memory`` runs them.
3. In the same child, before and after the audit: the bare model forward (``forward_batch``:
   inference_mode, channels-last, the audit's batch size) on tensors already in memory; the
   ratio below uses the mean of the two (a shared machine's speed drifts over a long run).
   The audit's ideal time is (images its models' backbones processed) x (bare seconds per
   image); the ratio ideal / measured is the share of the bare throughput the audit reached
   (decoding, caching, analysis and writing together cost the rest).

Reported per run: seconds for the folder scan (hash + validity check of every file, first
time only), audit seconds and seconds per source image, peak RSS of the child (and of its
largest decoding worker), the bare forward's images/s (before, after, mean) and the ratio;
the decode cost (``decode_ms``: decode + resize + normalise of one source image on one core)
and ``cpu_ceiling``, the best ratio the CPU allows when decoding and the forward share its cores
(forward core-seconds / (forward core-seconds + decode core-seconds) per source image).
``forward_share``: seconds spent inside the models' backbones during the audit / audit
seconds - what the audit spends outside the forward (waiting for data, analyses, writing),
measured in the audit itself and so immune to the drift; ``audit_forward_img_s`` against the
bare forward shows how much the decoding worker slows the forward it runs beside.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ANALYSES = "retained_knowledge,interference_bias,lingering_features"


# --------------------------------------------------------------------------- synthetic data
def _synth(seed: int, w: int = 500, h: int = 375):
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 90), (16, 50), (64, 25)):  # coarse to fine colour structure
        small = rng.integers(0, 256, (max(2, cells * 3 // 4), cells, 3), dtype=np.uint8)
        up = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        img += (np.asarray(up, np.float32) - 128) * amp / 128
    img += rng.normal(0, 14, (h, w, 3)).astype(np.float32)  # texture: JPEG size ~85 kB
    return Image.fromarray(np.clip(img + 128, 0, 255).astype(np.uint8))


def _write_one(job) -> None:
    path, seed = job
    _synth(seed).save(path, "JPEG", quality=90)


def generate(root: Path, n: int) -> Path:
    """``root/syn-<n>/<wnid>/<wnid>_<i>.JPEG``: n images spread evenly over the 1000 classes."""
    from transferscope.data.imagenet import imagenet_wnids

    folder = root / f"syn-{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    wnids = imagenet_wnids()
    jobs = []
    for i in range(n):
        wnid = wnids[i % 1000]
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        jobs.append((folder / wnid / f"{wnid}_{i:06d}.JPEG", i))
    t0 = time.perf_counter()
    with Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_write_one, jobs, chunksize=64)
    done.write_text(f"{n} images in {time.perf_counter() - t0:.1f} s\n")
    return folder


# --------------------------------------------------------------------------- one measurement
def child(folder: str, size: int, out: str, device: str = "cpu") -> dict:
    """Runs in a fresh process: the audit, then the bare forward. Returns the figures."""
    import torch

    from transferscope.analyses import AuditContext
    from transferscope.studies.memory import run_memory_audit
    from transferscope.data import image_folder, source_images
    from transferscope.engine import ResultCache
    from transferscope.engine.inference import auto_batch_size, forward_batch
    from transferscope.engine.loading import auto_workers
    from transferscope.models import create_model

    from transferscope.engine._memory import tune_heap

    tune_heap()  # as the audit's first pass does: the bare forward gets the same heap
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # every core for the model
    torch.manual_seed(0)
    source = create_model("efficientnet_lite0", init="imagenet")
    ft = create_model("efficientnet_lite0", 2, init="imagenet")
    with torch.no_grad():  # a fine-tuned backbone differs from the source's: its own passes
        next(ft.backbone.parameters()).mul_(1.001)
    counted = {"images": 0, "seconds": 0.0, "start": 0.0}

    def count(_module, args):
        counted["images"] += args[0].shape[0]
        counted["start"] = time.perf_counter()

    def timed(_module, _args, _out):  # the backbone's own time, wherever it is called from
        counted["seconds"] += time.perf_counter() - counted["start"]

    for m in (source, ft):
        m.backbone.register_forward_pre_hook(count)
        m.backbone.register_forward_hook(timed)
    t0 = time.perf_counter()
    src = source_images(folder)
    target = image_folder("hymenoptera", "val")
    scan = time.perf_counter() - t0
    ctx = AuditContext(source, {"fine-tuned": ft}, target, {"synthetic": src}, image_size=size,
                       cache=ResultCache(Path(out) / "cache"), progress=False,
                       device=device)
    batch = ctx.batch_size
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    bare_model = copy.deepcopy(source).eval().to(dev, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=dev)

    def bare_seconds_per_image() -> float:
        """The bare forward (no data, no analysis) at the audit's batch and size."""
        forward_batch(bare_model, x)  # warm-up
        sync()
        n_bare, t0 = 0, time.perf_counter()
        while n_bare < 256 or time.perf_counter() - t0 < 10:
            forward_batch(bare_model, x)
            n_bare += batch
        sync()
        return (time.perf_counter() - t0) / n_bare

    # measured before and after the audit: on a shared machine the CPU's speed drifts over
    # a half-hour run; the ratio uses their mean, both are reported
    bare_before = bare_seconds_per_image()
    counted.update(images=0, seconds=0.0)
    t0 = time.perf_counter()
    run_memory_audit(ctx, Path(out) / "audit", ANALYSES.split(","))
    audit = time.perf_counter() - t0
    forwarded = counted["images"]  # before the bare forward below adds its own
    forward_s = counted["seconds"]
    rss_audit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (kB units)
    workers_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    bare_after = bare_seconds_per_image()
    bare = (bare_before + bare_after) / 2
    gpu_peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else 0.0

    # decode + resize + normalise of one source image on one core, as a worker does it
    from transferscope.engine.inference import default_transform

    prepared = src.with_transform(default_transform(source, src, size))
    k = min(200, len(src))
    t0 = time.perf_counter()
    for i in range(k):
        prepared[i]  # as a decoding worker does it (TorchCodec or PIL, draft or not)
    decode = (time.perf_counter() - t0) / k
    # the CPU ceiling: per source image the forwards take cores * (forwarded / n) * bare
    # core-seconds (every core), decoding takes `decode` core-seconds more; with no time at
    # all spent on anything else the audit reaches at most their ratio
    cores = len(os.sched_getaffinity(0))
    fwd_core_s = cores * forwarded / len(src) * bare
    ceiling = fwd_core_s / (fwd_core_s + decode) if dev.type == "cpu" else 1.0
    return {"n": len(src), "size": size, "batch": batch, "scan_s": round(scan, 2),
            "audit_s": round(audit, 2), "s_per_image": round(audit / len(src), 5),
            "forwarded_images": forwarded, "bare_img_s": round(1 / bare, 1),
            "bare_img_s_before": round(1 / bare_before, 1),
            "bare_img_s_after": round(1 / bare_after, 1),
            "ratio": round(forwarded * bare / audit, 3),
            "forward_share": round(forward_s / audit, 3),
            "audit_forward_img_s": round(forwarded / forward_s, 1),
            "peak_rss_gib": round(rss_audit, 3), "worker_peak_rss_gib": round(workers_rss, 3),
            "workers": auto_workers(len(src), batch), "threads": torch.get_num_threads(),
            "auto_batch": auto_batch_size(size, dev), "device": str(dev),
            "gpu_peak_gib": round(gpu_peak, 3), "decode_ms": round(decode * 1e3, 2),
            "cpu_ceiling": round(ceiling, 3),
            "seconds": json.loads((Path(out) / "audit" / "run_stats.json").read_text())
            .get("seconds", {})}  # per analysis and the shared pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="1000,5000")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "ts-scale"))
    ap.add_argument("--workers", default="auto", help="auto or a number (0: main process)")
    ap.add_argument("--fast-decode", action="store_true", help="JPEG draft-mode decoding")
    ap.add_argument("--decoder", default="auto", choices=["auto", "pil"],
                    help="pil: never TorchCodec (TRANSFERSCOPE_DECODER=pil)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (audit and bare forward)")
    ap.add_argument("--json", help="append each result as a JSON line to this file")
    ap.add_argument("--child", nargs=4, metavar=("FOLDER", "SIZE", "OUT", "DEVICE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        folder, size, out, device = args.child
        print("RESULT", json.dumps(child(folder, int(size), out, device)), flush=True)
        return
    root = Path(args.root)
    env = {**os.environ, "TRANSFERSCOPE_PROGRESS": "0",
           "TRANSFERSCOPE_FAST_DECODE": "1" if args.fast_decode else "0",
           "TRANSFERSCOPE_DECODER": args.decoder}
    if args.workers != "auto":
        env["TRANSFERSCOPE_WORKERS"] = args.workers
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs "
          f"(affinity {len(os.sched_getaffinity(0))}), workers={args.workers}, "
          f"fast_decode={args.fast_decode}, decoder={args.decoder}", flush=True)
    for n in map(int, args.images.split(",")):
        t0 = time.perf_counter()
        folder = generate(root, n)
        print(f"# syn-{n}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
        for size in map(int, args.sizes.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                env["TRANSFERSCOPE_CACHE"] = tmp  # cold: file index and results
                proc = subprocess.run([sys.executable, __file__, "--child", str(folder),
                                       str(size), tmp, args.device], env=env,
                                      capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"child failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.split("RESULT", 1)[1])
            result.update(fast_decode=args.fast_decode, workers_setting=args.workers,
                          decoder=args.decoder)
            print(json.dumps(result), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

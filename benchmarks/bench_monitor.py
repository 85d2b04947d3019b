"""Overhead of auditing while training: the demo's fine-tuning (efficientnet_lite0, ImageNet
init, hymenoptera, recipe paper002, 128 px, batch 32) trained twice in one run, without and with
``--monitor`` (AuditMonitor at its defaults, every epoch).

    python benchmarks/bench_monitor.py [--epochs 2] [--out /tmp/bench-monitor]

Prints, per epoch, the training time (timings.json, which excludes the monitor) of both runs and
the monitor's time (monitor.jsonl ``seconds``), and the overhead: monitor time / epoch time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def train(out: Path, epochs: int, monitor: bool) -> None:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "transferscope.cli", "train", "--arch", "efficientnet_lite0",
           "--init", "imagenet", "--data", "hymenoptera", "--recipe", "paper002",
           "--epochs", str(epochs), "--image-size", "128", "--batch-size", "32", "--out",
           str(out)] + (["--monitor"] if monitor else [])
    subprocess.run(cmd, check=True, env={**__import__("os").environ,
                                         "TRANSFERSCOPE_PROGRESS": "0"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-monitor"))
    a = ap.parse_args()
    train(a.out / "plain", a.epochs, monitor=False)
    train(a.out / "monitored", a.epochs, monitor=True)
    plain = json.loads((a.out / "plain" / "timings.json").read_text())
    mon_t = json.loads((a.out / "monitored" / "timings.json").read_text())
    records = [json.loads(line) for line in
               (a.out / "monitored" / "monitor.jsonl").read_text().splitlines()]
    by_epoch = {r["epoch"]: r["seconds"] for r in records}
    print("| epoch | epoch s (no monitor) | epoch s (monitored run) | monitor s | overhead |")
    print("|---|---|---|---|---|")
    ratios = []
    for key in sorted(plain, key=int):
        e = int(key)
        t_plain, t_mon, m = float(plain[key]), float(mon_t[key]), by_epoch.get(e, 0.0)
        ratios.append(m / t_plain)
        print(f"| {e} | {t_plain:.2f} | {t_mon:.2f} | {m:.2f} | {100 * m / t_plain:.1f} % |")
    print(f"\nmonitor before training (epoch 0, includes decoding the probe and the pretrained "
          f"model's pass): {by_epoch.get(0, 0.0):.2f} s; mean overhead per epoch "
          f"{100 * sum(ratios) / len(ratios):.1f} %")


if __name__ == "__main__":
    main()

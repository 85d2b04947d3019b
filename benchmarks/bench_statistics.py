"""Simulation check of transferscope.stats where the truth is known (the table in
docs/statistics.md): coverage of 95 % intervals over the right and the wrong unit, the false
"difference" rate of two equally good models on shared items, and the power for planted
effects.

    python benchmarks/bench_statistics.py [--sims 1000] [--boot 1000]
"""

from __future__ import annotations

import argparse
import time

from transferscope.stats.simulation import coverage, paired_rejection_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print("| check | units x items | resampled unit | result | target |")
    print("|---|---|---|---|---|")
    for k, m in ((10, 10), (20, 8), (50, 4)):
        c = coverage(args.sims, k, m, n_boot=args.boot)
        print(f"| coverage of 95 % interval | {k} x {m} | cluster | {c:.3f} | 0.93-0.97 |")
        w = coverage(args.sims, k, m, by_cluster=False, n_boot=args.boot)
        print(f"| coverage of 95 % interval | {k} x {m} | item (wrong unit) | {w:.3f} | - |")
    for k, m in ((10, 10), (20, 8)):
        f = paired_rejection_rate(0.0, args.sims, k, m, n_boot=args.boot)
        print(f"| false 'difference', equal models | {k} x {m} | cluster, paired | {f:.3f} "
              "| <= 0.05 |")
    f = paired_rejection_rate(0.0, args.sims, 20, 8, n_boot=args.boot, noise=0.0)
    print(f"| false 'difference', a model and its copy | 20 x 8 | cluster, paired | {f:.3f} "
          "| <= 0.05 |")
    for eff in (0.25, 0.5, 1.0):
        p = paired_rejection_rate(eff, args.sims, 20, 8, n_boot=args.boot)
        print(f"| power, planted effect {eff} (unit sd 1, pair sd 0.5) | 20 x 8 | cluster, "
              f"paired | {p:.3f} | - |")
    print(f"\n{args.sims} simulations each, {args.boot} bootstrap resamples; "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

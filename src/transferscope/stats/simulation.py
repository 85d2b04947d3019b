"""Checks of the statistics by simulation where the truth is known (as scipy and statsmodels
check theirs): coverage of the 95 % cluster intervals, the rate of a false "difference"
between two copies of one model, and the power to find a planted paired effect.

Data: ``clusters`` units with ``per_cluster`` items each; item value = ``mu`` + unit effect
(sd ``between``) + item noise (sd ``within``), so items of one unit are correlated (ICC =
between^2 / (between^2 + within^2)). Run larger with ``python benchmarks/bench_statistics.py``.
"""

from __future__ import annotations

import numpy as np

from transferscope.stats.resample import cluster_mean, paired_difference

__all__ = ["clustered", "coverage", "paired_rejection_rate"]


def clustered(rng, clusters: int, per_cluster: int, mu: float = 0.0, between: float = 1.0,
              within: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(values, cluster labels)`` of one simulated data set."""
    labels = np.repeat(np.arange(clusters), per_cluster)
    values = mu + rng.normal(0, between, clusters)[labels] + rng.normal(0, within, labels.size)
    return values, labels


def coverage(sims: int = 400, clusters: int = 20, per_cluster: int = 10, *, seed: int = 0,
             by_cluster: bool = True, n_boot: int = 1000) -> float:
    """Share of simulations whose 95 % interval of the mean covers the true mean (0).
    ``by_cluster=False`` resamples items as if independent (the wrong unit)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for s in range(sims):
        v, cl = clustered(rng, clusters, per_cluster)
        iv = cluster_mean(v, cl if by_cluster else None, n_boot=n_boot, seed=s)
        hits += iv.lo <= 0.0 <= iv.hi
    return hits / sims


def paired_rejection_rate(effect: float, sims: int = 400, clusters: int = 20,
                          per_cluster: int = 10, *, seed: int = 0, n_boot: int = 1000,
                          noise: float = 0.5) -> float:
    """Share of simulations where :func:`paired_difference` says the two models differ.

    Model b scores each item as model a plus ``effect`` plus its own noise (sd ``noise``,
    with a unit-level part), so ``effect = 0`` is two models of equal skill on shared items
    (the false "difference" rate; a copy of a model with ``noise = 0`` never differs) and
    ``effect > 0`` measures power.
    """
    rng = np.random.default_rng(seed)
    found = 0
    for s in range(sims):
        a, cl = clustered(rng, clusters, per_cluster)
        b = a + effect + rng.normal(0, noise, clusters)[cl] + rng.normal(0, noise, a.size)
        found += paired_difference(b, a, cl, n_boot=n_boot, seed=s).differs
    return found / sims

"""Small shared statistics for the analyses (functional, tensor in - tensor out)."""

from __future__ import annotations

import numpy as np
import torch

from transferscope.stats import auroc  # noqa: F401  (one implementation, re-exported)

__all__ = ["bootstrap_ci", "ci_fields", "compare_cis", "pearson", "per_class_rate", "with_ci"]


def per_class_rate(hits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of boolean/float ``hits`` per label; NaN for labels with no sample. ``(N,) -> (C,)``."""
    labels = labels.long()
    counts = torch.bincount(labels, minlength=num_classes).double()
    sums = torch.bincount(labels, weights=hits.double(), minlength=num_classes)
    out = sums / counts
    out[counts == 0] = float("nan")
    return out


def pearson(x, y) -> tuple[float, int]:
    """Pearson R over the entries finite in both, and how many there were."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan"), int(ok.sum())
    return float(np.corrcoef(x[ok], y[ok])[0, 1]), int(ok.sum())


def bootstrap_ci(values_or_fn, n: int | None = None, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, strata=None,
                 bias_correct: bool = False) -> tuple[float, float]:
    """Seeded percentile-bootstrap interval of a statistic over independent units (images or
    classes).

    ``values_or_fn`` is either a 1-d sequence of per-unit values (the statistic is their
    mean) or a function ``fn(idx) -> float`` of an ``(m,)`` integer array of resampled unit
    indices in ``range(n)`` (for statistics of several paired arrays: an AUROC, a difference
    of two accuracies on the same images, a CKA over images). Each of ``n_boot`` resamples
    draws ``n`` units with replacement from ``numpy.random.default_rng(seed)``, so the result
    is a pure function of the inputs and ``seed``. Resamples whose statistic is not finite
    (e.g. an AUROC of a resample without positives) are left out; ``(nan, nan)`` when there
    are no units or no finite resample. ``strata`` (an ``(n,)`` array of group labels, with a
    function only) resamples within each group, keeping the group sizes (e.g. clean images
    and composites of an AUROC). ``bias_correct`` (with a function) shifts the interval by the
    bootstrap estimate of the statistic's bias, ``mean(resampled) - fn(all units)``: for
    statistics that resampling with replacement itself moves (repeated images raise a
    linear CKA), the plain percentile interval can miss the estimate altogether.

    Hand-written rather than ``scipy.stats.bootstrap``: one index resampling has to drive
    arbitrary paired statistics that may be undefined on a resample, and the plain percentile
    interval keeps the result exactly reproducible for a given seed.

    Examples:
        >>> bootstrap_ci([0.5, 0.5, 0.5])
        (0.5, 0.5)
        >>> lo, hi = bootstrap_ci(np.arange(10.0), seed=1)
        >>> bool(lo < 4.5 < hi) and (lo, hi) == bootstrap_ci(np.arange(10.0), seed=1)
        True
        >>> x, y = np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 5])
        >>> bootstrap_ci(lambda i: float((y[i] - x[i]).mean()), n=4, seed=0)[0] >= 0
        True
        >>> bootstrap_ci([])
        (nan, nan)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    if callable(values_or_fn):
        if n is None:
            raise ValueError("bootstrap_ci with a function needs n, the number of units")
        if n == 0:
            return float("nan"), float("nan")
        if strata is None:
            idx = rng.integers(0, n, size=(n_boot, n))
        else:
            groups = [np.flatnonzero(np.asarray(strata) == g) for g in np.unique(strata)]
            idx = np.concatenate([g[rng.integers(0, g.size, size=(n_boot, g.size))]
                                  for g in groups], axis=1)
        stats = np.array([float(values_or_fn(row)) for row in idx])
    else:
        vals = np.asarray(values_or_fn, dtype=float).ravel()
        if vals.size == 0:
            return float("nan"), float("nan")
        stats = vals[rng.integers(0, vals.size, size=(n_boot, vals.size))].mean(1)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    if bias_correct and callable(values_or_fn):
        shift = float(stats.mean()) - float(values_or_fn(np.arange(n)))
        lo, hi = lo - shift, hi - shift
    return float(lo), float(hi)


def ci_fields(metric: str, values_or_fn, n: int | None = None, **kw) -> dict:
    """Summary fields ``{"<metric>_ci95": [lo, hi], "n": n}`` from :func:`bootstrap_ci`.

    Example:
        >>> ci_fields("mean", [1.0, 1.0])
        {'mean_ci95': [1.0, 1.0], 'n': 2}
    """
    if n is None and not callable(values_or_fn):
        n = int(np.asarray(values_or_fn).size)
    lo, hi = bootstrap_ci(values_or_fn, n, **kw)
    return {f"{metric}_ci95": [lo, hi], "n": int(n or 0)}


def with_ci(value: float, ci, spec: str = ".2f", scale: float = 1.0, unit: str = "") -> str:
    """``value [lo, hi]`` for a finding; just the value when the interval is missing.

    >>> with_ci(0.213, [0.18, 0.241])
    '0.21 [0.18, 0.24]'
    >>> with_ci(0.5, None, ".0f", 100, "%")
    '50%'
    """
    def num(v):
        t = f"{v * scale:{spec}}"
        return t[1:] if t.startswith("-") and float(t) == 0 else t  # no "-0"

    text = f"{num(value)}{unit}"
    if ci is None or len(ci) != 2 or not all(np.isfinite(np.asarray(ci, float))):
        return text
    return f"{text} [{num(ci[0])}, {num(ci[1])}]"


def compare_cis(named: dict) -> str:
    """Plain words on the highest vs the lowest of ``{name: (value, [lo, hi])}``: "clearly
    higher" when their 95 % intervals are apart, else "no clear difference"; "" when fewer
    than two have intervals.

    >>> compare_cis({"a": (0.3, [0.25, 0.35]), "b": (0.1, [0.05, 0.15])})
    'a is clearly higher than b (95 % intervals apart)'
    >>> compare_cis({"a": (0.3, [0.2, 0.4]), "b": (0.25, [0.15, 0.35])})
    'no clear difference between a and b (95 % intervals overlap)'
    """
    ok = {k: (v, ci) for k, (v, ci) in named.items() if ci is not None and len(ci) == 2
          and np.isfinite(np.asarray(ci, float)).all() and np.isfinite(v)}
    if len(ok) < 2:
        return ""
    hi = max(ok, key=lambda k: ok[k][0])
    lo = min(ok, key=lambda k: ok[k][0])
    if ok[hi][1][0] > ok[lo][1][1]:
        return f"{hi} is clearly higher than {lo} (95 % intervals apart)"
    return f"no clear difference between {hi} and {lo} (95 % intervals overlap)"

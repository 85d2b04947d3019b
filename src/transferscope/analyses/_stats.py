"""Small shared statistics for the analyses (functional, tensor in - tensor out)."""

from __future__ import annotations

import numpy as np
import torch


def per_class_rate(hits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of boolean/float ``hits`` per label; NaN for labels with no sample. ``(N,) -> (C,)``."""
    labels = labels.long()
    counts = torch.bincount(labels, minlength=num_classes).double()
    sums = torch.bincount(labels, weights=hits.double(), minlength=num_classes)
    out = sums / counts
    out[counts == 0] = float("nan")
    return out


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half).

    Returns NaN when either class is absent.
    """
    from scipy.stats import rankdata

    scores, positives = np.asarray(scores, float), np.asarray(positives, bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pearson(x, y) -> tuple[float, int]:
    """Pearson R over the entries finite in both, and how many there were."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan"), int(ok.sum())
    return float(np.corrcoef(x[ok], y[ok])[0, 1]), int(ok.sum())

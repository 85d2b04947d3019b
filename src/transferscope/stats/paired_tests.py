"""Tests for paired correctness and many classes at once: McNemar's exact test,
Benjamini-Hochberg, and the AUROC (Mann-Whitney) they are often reported beside."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["auroc", "benjamini_hochberg", "McNemar", "mcnemar"]


def auroc(scores, positives) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half).

    NaN when either class is absent.

    >>> auroc([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    1.0
    >>> auroc([0.5, 0.5], [0, 1])
    0.5
    """
    from scipy.stats import rankdata

    scores, positives = np.asarray(scores, float), np.asarray(positives, bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class McNemar:
    """Paired correctness of two models on the same items: ``only_a`` items only model a got
    right, ``only_b`` only b; exact two-sided binomial p on the discordant pairs."""

    only_a: int
    only_b: int
    both: int
    neither: int
    p_value: float

    @property
    def n(self) -> int:
        return self.only_a + self.only_b + self.both + self.neither

    def to_dict(self) -> dict:
        return {"only_a": self.only_a, "only_b": self.only_b, "both": self.both,
                "neither": self.neither, "p_value": self.p_value, "n": self.n,
                "test": "McNemar (exact binomial)"}


def mcnemar(a_correct, b_correct) -> McNemar:
    """McNemar's exact test of equal accuracy for two models on the same items.

    ``a_correct``, ``b_correct``: ``(N,)`` booleans. p = 1 when there is no discordant pair.

    Example:
        >>> r = mcnemar([1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0])
        >>> r.only_a, r.only_b, round(r.p_value, 4)
        (6, 0, 0.0312)
    """
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    oa, ob = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if oa + ob == 0 else float(binomtest(oa, oa + ob, 0.5).pvalue)
    return McNemar(oa, ob, int((a & b).sum()), int((~a & ~b).sum()), p)


def benjamini_hochberg(p_values, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Which of many tests to call significant at false discovery rate ``q``, and the
    BH-adjusted p-values (``scipy.stats.false_discovery_control``). NaN p-values are never
    significant and stay NaN.

    Example:
        >>> keep, adj = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
        >>> keep.tolist(), [round(float(x), 3) for x in adj]
        ([True, False, False, False], [0.04, 0.053, 0.053, 0.5])
    """
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, float).ravel()
    adj = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        adj[ok] = false_discovery_control(np.clip(p[ok], 0, 1))
    return np.where(ok, adj <= q, False), adj

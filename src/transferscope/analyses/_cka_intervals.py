"""Bootstrap intervals of linear CKA over images (paper 003's Table 1 with its uncertainty),
from ``n x n`` Gram matrices; split from :mod:`transferscope.analyses.cka`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch


def _gram_cka(k: np.ndarray, l: np.ndarray, idx: np.ndarray) -> float:
    """Linear CKA of the rows ``idx`` (repeats allowed) from Gram matrices ``X X^T``."""
    def centre(g):
        g = g[np.ix_(idx, idx)]
        return g - g.mean(0)[None, :] - g.mean(1)[:, None] + g.mean()
    kc, lc = centre(k), centre(l)
    den = np.sqrt((kc * kc).sum() * (lc * lc).sum())
    return float((kc * lc).sum() / den) if den > 0 else float("nan")


def _clip01(pair) -> list[float]:
    return [float(min(max(v, 0.0), 1.0)) if v == v else v for v in pair]


def cka_intervals(features: Mapping[tuple[str, str], torch.Tensor],
                  pairs: Sequence[tuple[str, str]], layers: Sequence[str], *,
                  n_boot: int = 200, seed: int = 0, max_images: int = 2000) -> dict:
    """Seeded percentile-bootstrap 95 % intervals of CKA over images.

    ``features[(model, layer)]`` is ``(n, p)`` per-sample features (the same n images for all).
    Images are resampled with replacement (one resampling shared by every pair and layer,
    through the seed); CKA of a resample is computed from the ``n x n`` Gram matrices, which
    equals the feature-space CKA of the repeated rows. Repeated rows raise the plug-in linear
    CKA (measured on the quick demo: every resample of 153 images above the estimate), so the
    percentile interval is shifted by the bootstrap bias estimate (``bias_correct``) and
    clipped to [0, 1]. Returns ``{"cka_ci95": {pair: {layer:
    [lo, hi]}}, "mean_cka_ci95": {pair: [lo, hi]}, "n": n}``; empty intervals (NaN) when
    ``n > max_images`` (Gram matrices would be too large).

    Example:
        >>> x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
        >>> r = cka_intervals({("a", "l"): x, ("b", "l"): 2 * x}, [("a", "b")], ["l"])
        >>> [round(v, 6) for v in r["cka_ci95"]["a & b"]["l"]], r["n"]
        ([1.0, 1.0], 30)
    """
    from transferscope.analyses._stats import bootstrap_ci

    n = len(next(iter(features.values()))) if features else 0
    nan = [float("nan"), float("nan")]
    out = {"cka_ci95": {}, "mean_cka_ci95": {}, "n": int(n)}
    if n == 0 or n > max_images:
        out["cka_ci95"] = {f"{a} & {b}": {la: nan for la in layers} for a, b in pairs}
        out["mean_cka_ci95"] = {f"{a} & {b}": nan for a, b in pairs}
        return out
    gram = {}
    for key, f in features.items():
        x = torch.as_tensor(f).flatten(1).double().numpy()
        gram[key] = x @ x.T
    for a, b in pairs:
        name = f"{a} & {b}"
        memo: dict = {}  # one seed: the mean's resamples are the per-layer ones, computed once

        def cka_of(la, i, a=a, b=b, memo=memo):
            key = (la, i.tobytes())
            if key not in memo:
                memo[key] = _gram_cka(gram[(a, la)], gram[(b, la)], i)
            return memo[key]

        out["cka_ci95"][name] = {
            la: _clip01(bootstrap_ci(lambda i, la=la: cka_of(la, i), n, n_boot=n_boot,
                                     seed=seed, bias_correct=True)) for la in layers}
        out["mean_cka_ci95"][name] = _clip01(bootstrap_ci(
            lambda i: float(np.nanmean([cka_of(la, i) for la in layers])), n,
            n_boot=n_boot, seed=seed, bias_correct=True))
    return out

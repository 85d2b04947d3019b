"""Linear CKA from ``n x n`` Gram matrices (biased and debiased HSIC), their bootstrap
intervals over target images, and the paired P-T vs RI-T comparison (paper 003's Table 1 with
its uncertainty); split from :mod:`transferscope.analyses.cka`. See docs/cka-estimators.md.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import itertools

import numpy as np
import pandas as pd
import torch

from transferscope.findings import ClaimCheck, Finding
from transferscope.stats import Comparison, Interval, verdict_of

__all__ = ["cka_finding_stats", "cka_intervals", "CLAIM_PAIRS", "collect_grams", "ESTIMATORS",
           "finding", "gram_cka", "plot_heatmap"]


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


def cka_intervals(features: Mapping[tuple[str, str], torch.Tensor] | None,
                  pairs: Sequence[tuple[str, str]], layers: Sequence[str], *,
                  n_boot: int = 200, seed: int = 0, max_images: int = 2000,
                  grams: Mapping | None = None, estimator: str = "biased") -> dict:
    """Seeded percentile-bootstrap 95 % intervals of CKA over images.

    ``features[(model, layer)]`` is ``(n, p)`` per-sample features (the same n images for all).
    Images are resampled with replacement (one resampling shared by every pair and layer,
    through the seed); CKA of a resample is computed from the ``n x n`` Gram matrices, which
    equals the feature-space CKA of the repeated rows. Repeated rows raise the plug-in linear
    CKA (measured on the quick demo: every resample of 153 images above the estimate), so the
    percentile interval is shifted by the bootstrap bias estimate (``bias_correct``) and
    clipped to [0, 1] (``estimator="debiased"``: not clipped below; see :func:`gram_cka`).
    ``grams`` (``{(model, layer): X X^T}``) replaces ``features`` when given. Returns ``{"cka_ci95": {pair: {layer:
    [lo, hi]}}, "mean_cka_ci95": {pair: [lo, hi]}, "n": n}``; empty intervals (NaN) when
    ``n > max_images`` (Gram matrices would be too large).

    Example:
        >>> x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
        >>> r = cka_intervals({("a", "l"): x, ("b", "l"): 2 * x}, [("a", "b")], ["l"])
        >>> [round(v, 6) for v in r["cka_ci95"]["a & b"]["l"]], r["n"]
        ([1.0, 1.0], 30)
    """
    from transferscope.analyses._stats import bootstrap_ci

    source = grams if grams is not None else features
    n = len(next(iter(source.values()))) if source else 0
    nan = [float("nan"), float("nan")]
    out = {"cka_ci95": {}, "mean_cka_ci95": {}, "n": int(n)}
    if n == 0 or n > max_images:
        out["cka_ci95"] = {f"{a} & {b}": {la: nan for la in layers} for a, b in pairs}
        out["mean_cka_ci95"] = {f"{a} & {b}": nan for a, b in pairs}
        return out
    gram = dict(grams) if grams is not None else {}
    for key, f in ({} if grams is not None else features).items():
        x = torch.as_tensor(f).flatten(1).double().numpy()
        gram[key] = x @ x.T
    clip = _clip01 if estimator == "biased" else (lambda v: [min(x, 1.0) for x in v])
    for a, b in pairs:
        name = f"{a} & {b}"
        memo: dict = {}  # one seed: the mean's resamples are the per-layer ones, computed once

        def cka_of(la, i, a=a, b=b, memo=memo):
            key = (la, i.tobytes())
            if key not in memo:
                memo[key] = gram_cka(gram[(a, la)], gram[(b, la)], i, estimator)
            return memo[key]

        out["cka_ci95"][name] = {
            la: clip(bootstrap_ci(lambda i, la=la: cka_of(la, i), n, n_boot=n_boot,
                                     seed=seed, bias_correct=True)) for la in layers}
        out["mean_cka_ci95"][name] = clip(bootstrap_ci(
            lambda i: float(np.nanmean([cka_of(la, i) for la in layers])), n,
            n_boot=n_boot, seed=seed, bias_correct=True))
    return out


# ----------------------------------------------------------------- estimators from Gram matrices
ESTIMATORS = ("biased", "debiased")


def _hsic_debiased(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC of Song et al. (2012) from two ``n x n`` Gram matrices (n >= 4)."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    sk, sl = k.sum(0), l.sum(0)
    return float(((k * l).sum() + sk.sum() * sl.sum() / ((n - 1) * (n - 2))
                  - 2.0 * (sk @ sl) / (n - 2)) / (n * (n - 3)))


def gram_cka(k: np.ndarray, l: np.ndarray, idx: np.ndarray | None = None,
             estimator: str = "biased") -> float:
    """Linear CKA from Gram matrices ``X X^T`` and ``Y Y^T`` over the rows ``idx`` (repeats
    allowed; None: all). ``"biased"``: Kornblith et al. (2019)'s plug-in HSIC of centred
    Grams; ``"debiased"``: the unbiased HSIC of Song et al. (2012) in numerator and
    denominator (Nguyen et al. 2021), whose CKA is near 0 for unrelated features (can be < 0).

    Example (Kornblith et al.'s reference: 0.55761):
        >>> rs = np.random.RandomState(1337); x = rs.randn(100, 10); y = rs.randn(100, 10) + x
        >>> round(gram_cka(x @ x.T, y @ y.T), 5)
        0.55761
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if idx is None:
        idx = np.arange(k.shape[0])
    if estimator == "biased":
        return _gram_cka(k, l, idx)
    kk, ll = k[np.ix_(idx, idx)], l[np.ix_(idx, idx)]
    if kk.shape[0] < 4:
        return float("nan")
    den = _hsic_debiased(kk, kk) * _hsic_debiased(ll, ll)
    return float(_hsic_debiased(kk, ll) / np.sqrt(den)) if den > 0 else float("nan")


def collect_grams(models, loader, used, layers, *, pool: str, device=None,
                  max_images: int = 256, max_bytes: float = 4 * 2 ** 30) -> tuple[dict, int]:
    """Gram matrices ``X X^T`` (float64, ``n x n``) of the per-image features of every
    (model, layer), over the first ``max_images`` images of ``loader``; the features are kept
    in float32 until the end (``pool="flatten"``: ``C*H*W`` per image, any width), at most
    ``max_bytes`` of them. Returns ``({(model, layer): gram}, n)``."""
    from transferscope.engine.inference import capture
    from transferscope.engine.modes import eval_mode
    from transferscope.errors import ConfigError
    from transferscope.models.base import resolve_layers

    mods = {m: resolve_layers(models[m], layers) for m in used}
    feats: dict = {}
    n, size = 0, 0
    with eval_mode(*(models[m] for m in used)), torch.no_grad():
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x[:max_images - n]
            if len(x) == 0:
                break
            for m in used:
                with capture(models[m], mods[m], "avg" if pool == "avg" else "none") as st:
                    models[m](x.to(device) if device is not None else x)
                for name, outs in st.items():
                    f = outs[0].flatten(1).float()
                    size += f.numel() * 4
                    feats.setdefault((m, name), []).append(f)
            if size > max_bytes:
                raise ConfigError(f"per-image features of {n + len(x)} images take "
                                  f"{size / 2 ** 30:.1f} GiB, more than {max_bytes / 2 ** 30:.1f}"
                                  " GiB: use fewer images (images=...) or smaller inputs")
            n += len(x)
    grams = {}
    for key in list(feats):
        f = torch.cat(feats.pop(key)).double()
        grams[key] = (f @ f.T).numpy()
    return grams, n


def _bias_shifted(stat, n: int, *, n_boot: int, seed: int, paired=None):
    """A cluster bootstrap over images of ``stat(idx)`` (or of ``paired = (fn_a, fn_b)``
    through :func:`~transferscope.stats.paired_statistic`), with the interval shifted by the
    bootstrap bias estimate (repeated images raise a plug-in CKA; see :func:`cka_intervals`).
    Returns the Interval, or the Comparison with its shifted difference."""
    from dataclasses import replace

    from transferscope.stats import cluster_statistic, paired_statistic

    seen: tuple[list, list] = ([], [])

    def record(fn, k):
        def wrapped(i):
            v = float(fn(i))
            seen[k].append(v)
            return v
        return wrapped

    images = np.arange(n)
    if paired is None:
        out = iv = cluster_statistic(record(stat, 0), images, unit="target image",
                                     n_boot=n_boot, seed=seed)
        boots = np.asarray(seen[0][1:], float)  # the first call is the point estimate
    else:
        out = paired_statistic(record(paired[0], 0), record(paired[1], 1), images, names=stat,
                               unit="target image", n_boot=n_boot, seed=seed)
        iv = out.difference
        boots = np.asarray(seen[0][1:], float) - np.asarray(seen[1][1:], float)
    boots = boots[np.isfinite(boots)]
    if iv.finite and boots.size:
        bias = float(boots.mean()) - iv.value
        iv = replace(iv, lo=iv.lo - bias, hi=iv.hi - bias,
                     method=iv.method + ", bias-shifted")
    return iv if paired is None else replace(out, difference=iv)


#: the pairs whose mean CKA paper 003's claim compares (P-T pair minus RI-T pair)
CLAIM_PAIRS = ("P-T #1 & P-T #2", "RI-T #1 & RI-T #2")


def cka_finding_stats(grams: Mapping, pairs: Sequence[tuple[str, str]], layers: Sequence[str],
                      n: int, *, estimator: str = "biased", n_boot: int = 200,
                      seed: int = 0) -> dict:
    """Mean CKA over ``layers`` per pair with an interval over target images, and the paired
    comparison of the P-T pair with the RI-T pair on the same resampled images.

    Returns ``{"mean_cka_interval": {pair: Interval dict}, "pt_vs_rit": Comparison dict or
    None}`` (JSON-ready)."""
    memo: dict = {}

    def mean_of(a, b):
        def fn(i):
            key = (a, b, hash(i.tobytes()))
            if key not in memo:
                vals = [gram_cka(grams[(a, la)], grams[(b, la)], i, estimator) for la in layers]
                memo[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            return memo[key]
        return fn

    fns = {f"{a} & {b}": mean_of(a, b) for a, b in pairs}
    out = {"mean_cka_interval": {name: _bias_shifted(fn, n, n_boot=n_boot, seed=seed).to_dict()
                                 for name, fn in fns.items()}, "pt_vs_rit": None}
    if all(p in fns for p in CLAIM_PAIRS):
        comp = _bias_shifted(CLAIM_PAIRS, n, n_boot=n_boot, seed=seed,
                             paired=tuple(fns[p] for p in CLAIM_PAIRS))
        out["pt_vs_rit"] = comp.to_dict()
    return out


def plot_heatmap(wide: pd.DataFrame, title: str = "linear CKA"):
    """Heat-map with model pairs as rows, layers as columns, values written in the cells."""
    from transferscope.analyses._figures import subplots

    vals = wide.to_numpy(float)
    fig, ax = subplots(figsize=(max(4.0, 0.7 * vals.shape[1] + 2), 0.5 * vals.shape[0] + 1.5))
    im = ax.imshow(vals, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(vals.shape[1]))
    ax.set_xticklabels(wide.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(vals.shape[0]))
    ax.set_yticklabels(wide.index, fontsize=7)
    for i, j in itertools.product(range(vals.shape[0]), range(vals.shape[1])):
        if np.isfinite(vals[i, j]) and vals.size <= 120:
            ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if vals[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _interval(d: dict | None, value: float, ci, n: int) -> Interval:
    if d:
        return Interval(**d)
    lo, hi = ci if ci is not None and len(ci) == 2 else (float("nan"), float("nan"))
    return Interval(value, lo, hi, "target image", n)


def finding(result: AnalysisResult) -> Finding | None:
    """Mean CKA over modules per pair with its interval over target images, and the paired
    comparison of the P-T pair with the RI-T pair (claim 003.cka)."""
    s = result.summary
    mean, n = s.get("mean_cka", {}), int(s.get("n", 0) or 0)
    if not mean:
        return None
    ivs = {k: _interval(s.get("mean_cka_interval", {}).get(k), v,
                        s.get("mean_cka_ci95", {}).get(k), n) for k, v in mean.items()}
    clauses = [f"{k} {iv}" for k, iv in ivs.items()]
    checks = ()
    comp = s.get("pt_vs_rit")
    if comp:
        c = Comparison(comp["a"], comp["b"], Interval(**comp["difference"]), comp["p_value"],
                       comp["test"])
        clauses.append(c.words("in mean CKA"))
        verdict, why = verdict_of(c.difference, ">")
        checks = (ClaimCheck(
            "003.cka", verdict, f"{why} for {c.a} minus {c.b}, paired over the same target "
            "images; with one pair of runs each, the verdict is about these runs, not about "
            "P-T and RI-T training in general", c.difference, c.test),)
    est = s.get("estimator", "biased")
    return Finding("Feature similarity",
                   f"(linear CKA averaged over modules, {est} HSIC, "
                   f"{'flattened' if s.get('pool') == 'flatten' else 'spatially pooled'} "
                   "features; 1 = same features; 95 % intervals over target images)",
                   clauses=tuple(clauses), estimates=tuple(ivs.items()), checks=checks,
                   numbers=dict(mean))

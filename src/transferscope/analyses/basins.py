"""(epsilon, delta)-basins of the loss landscape (paper 003, section 3.3, Definition 3.1;
Appendix B.6).

The candidate basin S is the convex hull of a few solutions theta_1..theta_k (e.g. two P-T
runs). Definition 3.1 asks three things of S, for a loss l and its mean mu on S:

1. flat inside: ``E_{w ~ U_S} |l(w) - mu| <= epsilon`` (a first-power spread, not a variance);
2. higher just outside, in every direction: for w1, w2 ~ U_S let f(w1, w2) be the point where
   the ray from w1 through w2 leaves S; with isotropic noise nu ~ N(0, delta^2/n I_n) (so
   ||nu|| is about delta), ``E[l(f + nu)] - mu >= 2 epsilon``;
3. higher along extrapolations: moving a further |nu| (nu ~ N(0, delta^2)) beyond f along
   the same ray, ``E[l(kappa)] - mu >= 2 epsilon``.

Estimates. Points of S are ``sum_i w_i theta_i`` with Dirichlet(1, ..., 1) weights, which is
exactly the uniform distribution on S when the solutions are affinely independent (the usual
case for k << n). mu and epsilon are the sample mean and mean absolute deviation of l. For
conditions 2-3, the exit point f is found in weight space: along a + t (b - a) the first
weight to reach zero fixes t. For each delta of a grid both expectations are estimated by
Monte-Carlo, and the reported delta is the smallest grid value meeting both (NaN if none).
The comparisons follow the definition as written: with epsilon = 0 a zero excess qualifies;
when the error's mu + 2 epsilon exceeds 1 no delta can, and the hull is *not a basin*
(:func:`basin_status`); "cannot tell" is left for a grid that may be too short.
Noise is added to parameters only (n = their number); BatchNorm buffers are combined with the
same weights, and re-estimated at every point by default whenever the model has BatchNorm
(see :func:`~transferscope.analyses._weights.bn_loader`), on images that are not evaluated.
l is the error rate by default, as in the paper's reported basins.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, fmt, register_analysis
from transferscope.analyses._transfer import eval_and_bn, merge, transfer_inputs
from transferscope.analyses._weights import seed_of as _seed
from transferscope.analyses._weights import state_of as _state
from transferscope.analyses._weights import bn_loader, combine, evaluate_states
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError
from transferscope.findings import ClaimCheck
from transferscope.stats import Verdict, too_few

__all__ = ["basin_estimates", "basin_status", "BasinsOptions", "DEFAULT_DELTAS", "exit_weights",
           "finding", "hull_basins", "hull_weights", "meets", "MIN_IMAGES", "run", "TOL"]

# delta is in parameter-norm units, so its scale grows with the model (lite0, 4.6 M parameters:
# the P-T basin on chest X-rays first meets conditions 2-3 at 256); powers of 4 up to 1024
DEFAULT_DELTAS = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)
#: rounding allowance of the comparisons (relative)
TOL = 1e-9
#: the error moves in steps of 1/images; below 250 a step exceeds the paper's epsilons
#: (0.0034-0.0054), so the finding says too few images to tell
MIN_IMAGES = 250


def hull_weights(k: int, num: int, seed: int = 0) -> np.ndarray:
    """``(num, k)`` Dirichlet(1) weights: uniform points of the (k-1)-simplex, seeded."""
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=num)


def exit_weights(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Weights of f(w1, w2): where the ray from ``a`` through ``b`` leaves the simplex.

    ``alpha~ = min over i with b_i < a_i of a_i / (a_i - b_i)``; None when ``a == b``.

    Example:
        >>> exit_weights(np.array([0.5, 0.5]), np.array([0.25, 0.75])).tolist()
        [0.0, 1.0]
    """
    d = np.asarray(b, float) - np.asarray(a, float)
    neg = d < 0
    if not neg.any():
        return None
    ratios = np.asarray(a, float)[neg] / -d[neg]
    c = a + ratios.min() * d
    c[np.flatnonzero(neg)[np.argmin(ratios)]] = 0.0
    return np.clip(c, 0.0, None) / np.clip(c, 0.0, None).sum()


def _param_norm(states, weights, names) -> float:
    """``||sum_i w_i theta_i||`` over ``names``; 0 when it is rounding noise (identical states,
    weights summing to 0)."""
    total, scale = 0.0, 0.0
    for name in names:
        ts = [s[name].detach().to("cpu", torch.float64) for s in states]
        total += float(sum(w * t for w, t in zip(weights, ts)).square().sum())
        scale += sum(abs(w) * float(t.square().sum()) ** 0.5 for w, t in zip(weights, ts)) ** 2
    return total ** 0.5 if total ** 0.5 > 1e-9 * scale ** 0.5 else 0.0


def _noisy(states, weights, names, std: float, seed: int):
    def build():
        st = combine(states, weights)
        g = torch.Generator().manual_seed(seed)
        for name in names:
            t = st[name]
            noise = torch.randn(t.shape, generator=g, dtype=torch.float64) * std
            st[name] = (t.double() + noise.to(t.device)).to(t.dtype)
        return st
    return build


def basin_estimates(model: nn.Module, solutions: Sequence, loader: Iterable, *,
                    num_samples: int = 16, num_pairs: int = 8,
                    deltas: Sequence[float] = DEFAULT_DELTAS, metric: str = "error",
                    seed: int = 0, param_names: Sequence[str] | None = None,
                    bn_reestimate_loader: Iterable | None = None, device=None,
                    bn_reestimate: bool | None = None) -> dict:
    """Monte-Carlo estimates of mu, epsilon and delta of Definition 3.1 for hull(solutions).

    Args:
        model: a model of the architecture (used through ``functional_call``, not changed).
        solutions: state dicts (or modules) spanning S.
        num_samples: points of S for mu and epsilon.
        num_pairs: (w1, w2) pairs per delta for conditions 2 and 3.
        deltas: grid of delta values (in parameter-norm units), increasing.
        metric: ``"error"``, ``"loss"`` (cross-entropy) or ``"accuracy"`` column to use as l.
        param_names: tensors that receive noise (default: the model's parameters).

    Returns:
        dict with ``mu``, ``epsilon``, ``delta`` (NaN if no grid value satisfies 2-3),
        ``samples`` (DataFrame: sample, weights, metric), ``vicinity`` (delta, condition,
        pair, value) and ``by_delta`` (delta, cond2, cond3, satisfied).
    """
    states = [_state(s) for s in solutions]
    if len(states) < 1:
        raise ConfigError("a basin needs at least one solution")
    if metric not in ("error", "loss", "accuracy"):
        raise ConfigError(f"metric must be 'error', 'loss' or 'accuracy', got {metric!r}")
    names = list(param_names) if param_names is not None else [n for n, _ in
                                                                model.named_parameters()]
    n_params = sum(states[0][n].numel() for n in names)
    k = len(states)
    weights = hull_weights(k, num_samples, seed)
    kw = dict(bn_reestimate_loader=bn_reestimate_loader, device=device,
              bn_reestimate=bn_reestimate)
    res = evaluate_states(model, [lambda w=w: combine(states, w) for w in weights], loader, **kw)
    values = res[metric].to_numpy(float)
    mu = float(values.mean())
    eps = float(np.abs(values - mu).mean())
    if eps <= TOL * max(1.0, abs(mu)):  # equal values whose mean is off by rounding
        eps = 0.0
    samples = pd.DataFrame({"sample": range(num_samples),
                            "weights": [w.round(6).tolist() for w in weights], metric: values})

    rng = np.random.default_rng(_seed(seed, 1))
    pairs = []
    while len(pairs) < num_pairs and k > 1:
        a, b = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
        c = exit_weights(a, b)
        if c is not None:
            pairs.append((a, c, _param_norm(states, c - a, names)))
    rows, by_delta, delta_hat = [], [], float("nan")
    for di, delta in enumerate(deltas):
        fns, meta = [], []
        for pi, (a, c, dist) in enumerate(pairs):
            fns.append(_noisy(states, c, names, delta / np.sqrt(n_params), _seed(seed, 2, di, pi)))
            meta.append((2, pi))
            if dist > 0:
                nu = abs(np.random.default_rng(_seed(seed, 3, di, pi)).normal(0.0, delta))
                fns.append(lambda w=c + (nu / dist) * (c - a): combine(states, w))
                meta.append((3, pi))
        vals = evaluate_states(model, fns, loader, **kw)[metric].to_numpy(float) if fns else []
        for (cond, pi), v in zip(meta, vals):
            rows.append({"delta": float(delta), "condition": cond, "pair": pi,
                         metric: float(v), "excess": float(v) - mu})
        ex = pd.DataFrame(rows[len(rows) - len(meta):]) if meta else pd.DataFrame()
        sign = -1.0 if metric == "accuracy" else 1.0  # for accuracy "higher l" means lower acc

        def mean_excess(cond):
            part = ex[ex["condition"] == cond] if len(ex) else ex
            # skipna=False: a NaN value must not vanish from the mean (evaluate_states raises
            # on non-finite logits, so none is expected)
            return float(sign * part["excess"].mean(skipna=False)) if len(part) else float("nan")

        e2, e3 = mean_excess(2), mean_excess(3)
        ok = meets(e2, eps) and meets(e3, eps)
        by_delta.append({"delta": float(delta), "cond2_excess": e2, "cond3_excess": e3,
                         "two_epsilon": 2 * eps, "satisfied": ok})
        if ok and np.isnan(delta_hat):
            delta_hat = float(delta)
    status, why = basin_status(mu, eps, delta_hat, metric, bool(pairs), max(deltas, default=0))
    return {"mu": mu, "epsilon": eps, "delta": delta_hat, "metric": metric, "status": status,
            "why": why, "images": int(res["n"].iloc[0]), "samples": samples,
            "vicinity": pd.DataFrame(rows), "by_delta": pd.DataFrame(by_delta)}


def meets(excess: float, eps: float) -> bool:
    """Conditions 2-3 of Definition 3.1 at one delta: ``excess >= 2 epsilon`` as written, so
    with epsilon = 0 a zero excess qualifies (float rounding forgiven up to :data:`TOL`).

    >>> meets(0.0, 0.0), meets(-1e-17, 0.0), meets(0.01, 0.006), meets(float("nan"), 0.0)
    (True, True, False, False)
    """
    return bool(excess >= 2 * eps - TOL * max(1.0, abs(excess)))


def basin_status(mu: float, eps: float, delta: float, metric: str, has_pairs: bool,
                 largest: float) -> tuple[str, str]:
    """Definition 3.1's verdict on the hull: ``"basin"`` (some delta of the grid meets
    conditions 2-3), ``"not a basin"`` (no delta can: the error cannot exceed 1, so when
    mu + 2 epsilon > 1 the excess never reaches 2 epsilon; for accuracy mu - 2 epsilon < 0),
    or ``"cannot tell"`` (no vicinity to test, or a delta beyond the grid might qualify).

    >>> basin_status(0.8, 0.15, float("nan"), "error", True, 1024.0)[0]
    'not a basin'
    >>> basin_status(0.3, 0.05, float("nan"), "error", True, 1024.0)[0]
    'cannot tell'
    >>> basin_status(0.2, 0.0, 0.25, "error", True, 1024.0)[0]
    'basin'
    """
    if np.isfinite(delta):
        return "basin", (f"conditions 2-3 hold from delta = {delta:g} on (epsilon = {eps:.4g}"
                         + ("; every point of the hull has the same value, so an unchanged "
                            "vicinity qualifies" if eps == 0 else "") + ")")
    bound = {"error": mu + 2 * eps - 1, "accuracy": -(mu - 2 * eps)}.get(metric)
    if bound is not None and bound > TOL:
        side = (f"mu + 2 epsilon = {mu + 2 * eps:.4g} > 1" if metric == "error"
                else f"mu - 2 epsilon = {mu - 2 * eps:.4g} < 0")
        return "not a basin", (f"{side}: no point can exceed mu by 2 epsilon, so no delta "
                               "meets conditions 2-3")
    if not has_pairs:
        return "cannot tell", ("the hull is a single point: conditions 2-3 have no direction "
                               "to test")
    return "cannot tell", (f"no delta up to {largest:g} meets conditions 2-3; a larger delta "
                           "might")


def hull_basins(model: nn.Module, solutions: Mapping[str, object], loader: Iterable, **kwargs
        ) -> AnalysisResult:
    """Definition 3.1 estimates for the hull of the named solutions (e.g. two P-T runs).

    ``kwargs`` go to :func:`basin_estimates`. The summary holds mu, epsilon and delta.
    """
    est = basin_estimates(model, list(solutions.values()), loader, **kwargs)
    summary = {k: est[k] for k in ("mu", "epsilon", "delta", "metric", "status", "why",
                                   "images")}
    summary["solutions"] = list(solutions)
    result = AnalysisResult("basins", summary, {k: est[k] for k in ("samples", "vicinity",
                                                                     "by_delta")})
    result.figures["basin_vicinity"] = _figure(est)
    result.notes += [
        "Uniform points of the hull are Dirichlet(1) combinations (exact for affinely "
        "independent solutions); delta is the smallest grid value meeting conditions 2 and 3.",
        "Definition 3.1 as written: with epsilon = 0 an unchanged vicinity meets conditions "
        "2-3; when mu + 2 epsilon > 1 (error) no delta can, and the hull is not a basin."]
    return result


def _figure(est: dict):
    from transferscope.analyses._figures import subplots

    t = est["by_delta"]
    fig, ax = subplots(figsize=(5, 3.2))
    if len(t):
        ax.plot(t["delta"], t["cond2_excess"], marker="o", label="noise at exit point (2)")
        ax.plot(t["delta"], t["cond3_excess"], marker="s", label="extrapolation (3)")
        ax.axhline(2 * est["epsilon"], color="grey", linestyle="--", label="2 epsilon")
        ax.set_xscale("log")
    ax.set_xlabel("delta")
    ax.set_ylabel(f"E[{est['metric']}] - mu")
    ax.set_title(f"mu={est['mu']:.4f}, epsilon={est['epsilon']:.4f}, delta={est['delta']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


class BasinsOptions(AnalysisOptions):
    shorthand = {"criticality_images": "images", "bn_reestimate": "bn_reestimate",
                 "seed": "seed"}  # transfer_options
    images: int = Field(64, ge=1, description="validation images the estimates use (the same "
                        "seeded sample as module criticality)")
    samples: int = Field(8, ge=1, description="Monte-Carlo points of the hull")
    pairs: int = Field(4, ge=1, description="vicinity pairs per delta")
    seed: int = 0
    bn_reestimate: bool | None = Field(None, description="re-estimate BatchNorm statistics at every "
                                       "weight-space point; default (unset): whenever the "
                                       "model has BatchNorm (extrapolated running variances "
                                       "are meaningless)")
    bn_images: int = Field(64, ge=1, description="images the BatchNorm statistics are "
                           "re-estimated on (training images when the study has them, else "
                           "held-out validation images); never evaluated")
    min_images: int = Field(MIN_IMAGES, ge=1, description="below this many evaluation images "
                            "the finding says too few images to tell")


def run(ctx: AuditContext, *, images: int, samples: int, pairs: int, seed: int,
        bn_reestimate: bool | None, bn_images: int, min_images: int) -> AnalysisResult:
    """Definition 3.1 for the hull of the two P-T and of the two RI-T models of ``ctx``; the
    BatchNorm statistics of every point are re-estimated on images that are not evaluated."""
    inp = transfer_inputs(ctx)
    needs = bn_loader(inp.first, [], [], bn_reestimate) is not None
    loader, bn, info = eval_and_bn(ctx, images, bn_images if needs else 0, seed)
    hulls = {kind: {n: inp.models[n].state_dict() for n in (f"{kind} #1", f"{kind} #2")}
             for kind in ("P-T", "RI-T") if f"{kind} #2" in inp.models}
    parts = {kind: hull_basins(inp.first, sols, loader, num_samples=samples, num_pairs=pairs,
                               seed=seed, bn_reestimate_loader=bn,
                               bn_reestimate=bn_reestimate if needs else False)
             for kind, sols in hulls.items()}
    for part in parts.values():
        part.summary.update(bn=info if needs else None, min_images=min_images)
    res = merge("basins", parts)
    res.notes.append(f"Estimated on {info['evaluation_images']} seeded "
                     f"{info['evaluation_split']} images" + (
                         f"; BatchNorm re-estimated on {info['bn_images']} other "
                         f"{info['bn_split']} images." if needs else "."))
    return res


def _clause(kind: str, v: dict) -> str:
    mu, eps = v.get("mu", float("nan")), v["epsilon"]
    status = v.get("status") or ("basin" if v["delta"] is not None and v["delta"] == v["delta"]
                                 else "cannot tell")
    if status == "basin":
        return (f"{kind} delta {fmt(v['delta'])} (epsilon {fmt(eps)}, mu {fmt(mu)}): an "
                "(epsilon, delta)-basin")
    if status == "not a basin":
        return (f"{kind} not a basin: mu + 2 epsilon = {fmt(mu + 2 * eps)} exceeds 1, so no "
                f"delta can meet conditions 2-3 (epsilon {fmt(eps)})")
    return (f"{kind} no delta of the tested grid meets conditions 2-3, so the data cannot tell "
            f"its basin (epsilon {fmt(eps)}; mu + 2 epsilon = {fmt(mu + 2 * eps)})")


def finding(result: AnalysisResult) -> Finding | None:
    """Definition 3.1 on each hull; paper 003's claim that the P-T solutions share a basin."""
    s = {k: v for k, v in result.summary.items() if isinstance(v, dict) and "delta" in v}
    checks, caveat = [], ""
    pt = s.get("P-T")
    if pt is not None:
        status = pt.get("status", "cannot tell")
        verdict = {"basin": Verdict.AGREES, "not a basin": Verdict.CONTRADICTS}.get(
            status, Verdict.CANNOT_TELL)
        why = (f"Definition 3.1 on the hull of these two P-T runs: {status} - "
               f"{pt.get('why', 'no delta of the grid qualifies')}")
        few = too_few(int(pt.get("images", 0)), int(pt.get("min_images", MIN_IMAGES)),
                      "evaluation images") if "images" in pt else None
        if few:
            caveat, verdict, why = few, Verdict.CANNOT_TELL, f"{few}; {why}"
        checks.append(ClaimCheck("003.basin", verdict, why, None,
                                 "Definition 3.1, Monte-Carlo over the hull"))
    return Finding("Basins", "(Definition 3.1; delta = how far one can move from the hull of "
                   "the solutions before the error rises by 2 epsilon)",
                   clauses=tuple(_clause(k, v) for k, v in s.items()), checks=tuple(checks),
                   caveat=caveat, numbers={k: v["delta"] for k, v in s.items()})


register_analysis("basins", title="Basins of solutions", paper="paper 003, Definition 3.1",
                  section="what_transferred", order=6, options=BasinsOptions, run=run,
                  finding=finding, applies=lambda ctx: any(
                      f"{k} #2" in transfer_inputs(ctx).models for k in ("P-T", "RI-T")))

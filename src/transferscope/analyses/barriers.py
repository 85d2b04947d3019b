"""Performance barriers on the line between two solutions (paper 003, section 3.3, Figure 4;
Appendix B.4-B.8, Figures 12-18).

Models on the line theta_lambda = (1 - lambda) theta_0 + lambda theta_1 between two weight
vectors are evaluated for lambda in [0, 1], or beyond (e.g. [-1, 2], Appendix B.6, Figure 18).
Two solutions in one flat basin show no barrier: the loss along the line stays at or below
the straight line between the endpoint losses. The *barrier height* is the largest excess of
the loss over that straight line on [0, 1] (for accuracy, the largest drop below it).

Floating tensors are combined linearly, except BatchNorm ``running_var`` under weights
outside the simplex (extrapolation), which is combined geometrically (``prod var_i^w_i``) so
that it never goes negative; integer buffers (``num_batches_tracked``) come from the endpoint
with the largest weight. Whenever the model has BatchNorm, its statistics are re-estimated at
every point by default (reset, then a cumulative average over one pass of the re-estimation
loader with only the BatchNorm layers in train mode; ``bn_reestimate=False`` turns this off;
the paper's ResNet-50 uses Fixup and has no BatchNorm). The analysis re-estimates on images
it never evaluates: a seeded sample of training images, or a held-out part of the
validation set (:func:`~transferscope.analyses._transfer.eval_and_bn`). The barrier's 95 %
interval resamples the evaluation images (:func:`barrier_intervals`). Non-finite logits
raise :class:`~transferscope.errors.ModelError` naming the point and how many there were,
instead of being scored.

:func:`~transferscope.analyses._weights.evaluate_path` loads each point into the model and
runs the loader; :func:`~transferscope.analyses._weights.evaluate_path_batched` reads each data
batch once and evaluates every point on it with ``torch.func.functional_call`` (same numbers).
Both, with :func:`~transferscope.analyses._weights.combine`, live in :mod:`._weights`, shared
with the basin and criticality analyses, and are re-exported here.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import nn
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, fmt, register_analysis
from transferscope.analyses._transfer import eval_and_bn, transfer_inputs
from transferscope.analyses._weights import (  # noqa: F401 (the weight-space evaluation, re-exported)
    State, StateDict, bn_loader, combine, evaluate, evaluate_path, evaluate_path_batched,
    evaluate_states, interpolate)
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError
from transferscope.findings import ClaimCheck
from transferscope.stats import Interval, Verdict, cluster_statistic, too_few

__all__ = ["barrier_check", "barrier_height", "barrier_intervals", "barrier_paths",
           "BarriersOptions", "finding", "LAMBDAS", "MIN_IMAGES", "plot_paths", "run"]

#: fewer evaluation images than this: the barrier verdict says too few images to tell
MIN_IMAGES = 50

def barrier_height(df: pd.DataFrame, metric: str = "loss",
                   higher_is_better: bool | None = None) -> float:
    """Largest excess of ``metric`` over the straight line between its endpoint values.

    Only rows with lambda in [0, 1] count; rows at lambda = 0 and 1 must be present. For
    metrics where higher is better (``accuracy``, ``auc``; or ``higher_is_better=True``) the
    largest drop below the line is returned. Negative: the whole path beats the line.
    """
    if higher_is_better is None:
        higher_is_better = metric.lower() in ("accuracy", "acc", "auc", "top1")
    return _height(df["lambda"].to_numpy(float), df[metric].to_numpy(float), higher_is_better)


def _height(lam: np.ndarray, val: np.ndarray, higher_is_better: bool) -> float:
    at = {e: np.flatnonzero(np.isclose(lam, e)) for e in (0.0, 1.0)}
    if not all(len(v) for v in at.values()):
        raise ConfigError("barrier_height needs the path evaluated at lambda = 0 and lambda = 1;"
                          " include both endpoints in lambdas")
    m0, m1 = val[at[0.0][0]], val[at[1.0][0]]
    inside = (lam >= -1e-12) & (lam <= 1 + 1e-12)
    line = (1 - lam[inside]) * m0 + lam[inside] * m1
    excess = line - val[inside] if higher_is_better else val[inside] - line
    return float(np.max(excess))


def barrier_intervals(lambdas: Sequence[float], items: Sequence[tuple]) -> dict:
    """Loss and accuracy barriers with 95 % intervals that resample the evaluation images
    (each image keeps its losses at every lambda: the path is paired across points).

    ``items``: per lambda, ``(loss, correct)`` arrays over the same images. The barrier is a
    maximum over lambda, recomputed in every resample.

    Example:
        >>> lam = [0.0, 0.5, 1.0]
        >>> flat = [(np.ones(6), np.ones(6, bool))] * 3  # every image on the line: no barrier
        >>> barrier_intervals(lam, flat)["loss_barrier_interval"]["hi"]
        0.0
    """
    loss = np.stack([np.asarray(a, float) for a, _ in items])
    hits = np.stack([np.asarray(b, float) for _, b in items])
    lam, n = np.asarray(lambdas, float), loss.shape[1]
    lo = cluster_statistic(lambda i: _height(lam, loss[:, i].mean(axis=1), False), n,
                           unit="evaluation image")
    ac = cluster_statistic(lambda i: _height(lam, hits[:, i].mean(axis=1), True), n,
                           unit="evaluation image")
    ends = [float(loss[int(np.flatnonzero(np.isclose(lambdas, e))[0])].mean()) for e in (0, 1)]
    return {"loss_barrier_interval": lo.to_dict(), "accuracy_barrier_interval": ac.to_dict(),
            "endpoint_loss": float(np.mean(ends)), "images": int(n)}


# The one home of the default path (issue 25: it was 11, 3 and 9 points in three places).
LAMBDAS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def barrier_paths(model: nn.Module, named_pairs: Mapping[str, tuple], loader: Iterable,
                  lambdas: Sequence[float] | None = None, *,
                  bn_reestimate_loader: Iterable | None = None, batched: bool = True,
                  device=None, channels_last: bool = True,
                  bn_reestimate: bool | None = None) -> AnalysisResult:
    """Loss/accuracy along the line of every pair, with barrier heights (Figures 4, 12-18).

    ``named_pairs``: label -> ``(theta_0, theta_1)``; ``lambdas`` default to :data:`LAMBDAS`,
    the options model's path (interpolation and extrapolation; ``np.linspace(-1, 2, 31)``
    is finer). ``model``'s weights are left unchanged.
    ``channels_last`` (default) runs NHWC: faster on CPU, rounding differs at ~1e-7.
    BatchNorm statistics are re-estimated at every point whenever the model has BatchNorm,
    on ``bn_reestimate_loader`` or ``loader`` (``bn_reestimate=False`` turns it off).
    """
    reest = bn_loader(model, loader, bn_reestimate_loader, bn_reestimate)
    lambdas = list(LAMBDAS if lambdas is None else lambdas)
    frames, summary = [], {}
    for name, (t0, t1) in named_pairs.items():
        items: list = []
        if batched:
            df = evaluate_path_batched(model, t0, t1, lambdas, loader, reest, device,
                                       channels_last=channels_last,
                                       bn_reestimate=reest is not None, items=items)
        else:
            df = evaluate_path(model, t0, t1, lambdas, loader, reest, device,
                               channels_last=channels_last, bn_reestimate=reest is not None)
        frames.append(df.assign(pair=name))
        has_ends = any(np.isclose(lambdas, 0)) and any(np.isclose(lambdas, 1))
        summary[name] = {
            "loss_barrier": barrier_height(df, "loss") if has_ends else float("nan"),
            "accuracy_barrier": barrier_height(df, "accuracy") if has_ends else float("nan"),
            "min_loss": float(df["loss"].min()), "max_accuracy": float(df["accuracy"].max())}
        if has_ends and items:
            summary[name].update(barrier_intervals(lambdas, items))
    table = pd.concat(frames, ignore_index=True).drop(columns=["point"])
    result = AnalysisResult("barriers", summary, {"path": table[["pair"] + [
        c for c in table.columns if c != "pair"]]})
    for metric in ("accuracy", "loss"):
        result.figures[f"path_{metric}"] = plot_paths(table, metric)
    result.notes.append("Barrier height: max over lambda in [0,1] of the loss above (accuracy "
                        "below) the straight line between the endpoint values." +
                        (" BatchNorm statistics re-estimated at every point."
                         if reest is not None else ""))
    return result


def plot_paths(table: pd.DataFrame, metric: str):
    """One curve per pair: ``metric`` against lambda, endpoints marked by dotted lines."""
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(5.5, 3.5))
    for name, part in table.groupby("pair", sort=False):
        ax.plot(part["lambda"], part[metric], marker="o", markersize=3, label=str(name))
    for x in (0, 1):
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("lambda")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


class BarriersOptions(AnalysisOptions):
    shorthand = {"lambdas": "lambdas", "bn_reestimate": "bn_reestimate"}  # transfer_options
    lambdas: list[float] = Field(default_factory=lambda: list(LAMBDAS), min_length=1,
                                 description="points (1 - lambda) theta_0 + lambda theta_1")
    bn_reestimate: bool | None = Field(None, description="re-estimate BatchNorm statistics at every "
                                       "weight-space point; default (unset): whenever the "
                                       "model has BatchNorm (extrapolated running variances "
                                       "are meaningless)")
    bn_images: int = Field(64, ge=1, description="images the BatchNorm statistics are "
                           "re-estimated on: training images when the study has them, else "
                           "held out of the validation images; never evaluated")
    seed: int = Field(0, description="seed of the re-estimation sample")
    margin: float = Field(0.05, ge=0, description="paper 003's 'no barrier' holds when the "
                          "loss barrier's 95 % interval stays below this fraction of the mean "
                          "endpoint loss")
    min_images: int = Field(MIN_IMAGES, ge=1, description="below this many evaluation images "
                            "the finding says too few images to tell")


def run(ctx: AuditContext, *, lambdas: Sequence[float], bn_reestimate: bool | None, bn_images: int,
        seed: int, margin: float, min_images: int) -> AnalysisResult:
    """Barriers between the two P-T and the two RI-T models of ``ctx`` (section 3.3); the
    BatchNorm statistics of every point are re-estimated on images that are not evaluated."""
    inp = transfer_inputs(ctx)
    named = {f"{a} - {b}": (inp.models[a].state_dict(), inp.models[b].state_dict())
             for a, b in inp.pairs[:2]}
    needs = bn_loader(inp.first, [], [], bn_reestimate) is not None
    loader, bn, info = eval_and_bn(ctx, None, bn_images if needs else 0, seed)
    res = barrier_paths(inp.first, named, loader, list(lambdas), bn_reestimate_loader=bn,
                        bn_reestimate=bn_reestimate if needs else False)
    for v in res.summary.values():
        v.update(bn=info if needs else None, margin=margin, min_images=min_images)
    if needs:
        res.notes.append(f"BatchNorm statistics re-estimated on {info['bn_images']} "
                         f"{info['bn_split']} images (seed {seed}), disjoint from the "
                         f"{info['evaluation_images']} evaluated {info['evaluation_split']} "
                         "images.")
    return res


def barrier_check(name: str, v: dict) -> ClaimCheck:
    """Paper 003's "no performance barrier between two P-T models" on one pair: contradicted
    by a loss barrier whose interval over evaluation images excludes 0, supported when the
    interval stays below ``margin`` x the mean endpoint loss, else cannot tell."""
    d = v.get("loss_barrier_interval")
    iv = Interval(**d) if d else None
    test = "loss barrier on [0, 1], cluster bootstrap over evaluation images"
    if iv is None or not iv.finite:
        return ClaimCheck("003.barrier", Verdict.CANNOT_TELL, "no interval for the barrier "
                          "(the path lacks lambda = 0 or 1, or too few images)", iv, test)
    tol = v.get("margin", 0.05) * v.get("endpoint_loss", float("nan"))
    runs = f"for these two runs ({name}; one pair of runs, not P-T training in general)"
    if iv.lo > 0:
        return ClaimCheck("003.barrier", Verdict.CONTRADICTS, f"a loss barrier of {iv} lies "
                          f"above the straight line, its interval excludes 0, {runs}", iv, test)
    if iv.hi <= tol:
        return ClaimCheck("003.barrier", Verdict.AGREES, f"the loss barrier {iv} stays below "
                          f"{tol:.3g} ({v.get('margin', 0.05):g} x the endpoint loss) {runs}",
                          iv, test)
    return ClaimCheck("003.barrier", Verdict.CANNOT_TELL, f"the loss barrier {iv} includes 0 "
                      f"but reaches above {tol:.3g}, {runs}", iv, test)


def finding(result: AnalysisResult) -> Finding | None:
    """Loss barrier of every pair, with its interval over evaluation images; paper 003's
    claim on the P-T pair."""
    s = {k: v for k, v in result.summary.items() if isinstance(v, dict) and "loss_barrier" in v}
    clauses, estimates, checks, caveat = [], [], [], ""
    for k, v in s.items():
        d = v.get("loss_barrier_interval")
        if d:
            estimates.append((f"{k} loss barrier", Interval(**d)))
            clauses.append(f"{k} loss barrier {Interval(**d)}")
        else:
            clauses.append(f"{k} loss barrier {fmt(v['loss_barrier'])}")
        if k.startswith("P-T") and " - P-T" in k:
            checks.append(barrier_check(k, v))
            few = too_few(int(v.get("images", 0)), int(v.get("min_images", MIN_IMAGES)),
                          "evaluation images") if d else None
            if few:
                caveat = few
                checks[-1] = ClaimCheck("003.barrier", Verdict.CANNOT_TELL, few,
                                        checks[-1].estimate, checks[-1].test)
    bn = next((v["bn"] for v in s.values() if v.get("bn")), None)
    lead = ("loss above the straight line between the endpoints, largest over lambda in [0, 1]"
            + (f"; BatchNorm re-estimated on {bn['bn_images']} {bn['bn_split']} images not "
               "evaluated" if bn else ""))
    return Finding("Performance barriers", lead, clauses=tuple(clauses),
                   estimates=tuple(estimates), checks=tuple(checks), caveat=caveat,
                   numbers={k: v["loss_barrier"] for k, v in s.items()})


register_analysis("barriers", title="Performance barriers on the line between solutions",
                  paper="paper 003, section 3.3", section="what_transferred", order=5,
                  options=BarriersOptions, run=run, finding=finding,
                  applies=lambda ctx: bool(transfer_inputs(ctx).pairs))

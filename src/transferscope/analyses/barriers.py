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
loader - the evaluation loader unless another is given - with only the BatchNorm layers in
train mode; ``bn_reestimate=False`` turns this off; the paper's ResNet-50 uses Fixup and has
no BatchNorm). Non-finite logits raise :class:`~transferscope.errors.ModelError` naming the
point and how many there were, instead of being scored.

:func:`~transferscope.analyses._weights.evaluate_path` loads each point into the model and
runs the loader; :func:`~transferscope.analyses._weights.evaluate_path_batched` reads each data
batch once and evaluates every point on it with ``torch.func.functional_call`` (same numbers).
Both, with :func:`~transferscope.analyses._weights.combine`, live in :mod:`._weights`, shared
with the basin and criticality analyses, and are re-exported here.
"""

from __future__ import annotations

import html
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import nn
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, fmt, register_analysis
from transferscope.analyses._transfer import batches, transfer_inputs
from transferscope.analyses._weights import (  # noqa: F401 (the weight-space evaluation, re-exported)
    State, StateDict, bn_loader, combine, evaluate, evaluate_path, evaluate_path_batched,
    evaluate_states, interpolate)
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError

def barrier_height(df: pd.DataFrame, metric: str = "loss",
                   higher_is_better: bool | None = None) -> float:
    """Largest excess of ``metric`` over the straight line between its endpoint values.

    Only rows with lambda in [0, 1] count; rows at lambda = 0 and 1 must be present. For
    metrics where higher is better (``accuracy``, ``auc``; or ``higher_is_better=True``) the
    largest drop below the line is returned. Negative: the whole path beats the line.
    """
    if higher_is_better is None:
        higher_is_better = metric.lower() in ("accuracy", "acc", "auc", "top1")
    lam = df["lambda"].to_numpy(float)
    val = df[metric].to_numpy(float)
    at = {e: np.flatnonzero(np.isclose(lam, e)) for e in (0.0, 1.0)}
    if not all(len(v) for v in at.values()):
        raise ConfigError("barrier_height needs the path evaluated at lambda = 0 and lambda = 1;"
                          " include both endpoints in lambdas")
    m0, m1 = val[at[0.0][0]], val[at[1.0][0]]
    inside = (lam >= -1e-12) & (lam <= 1 + 1e-12)
    line = (1 - lam[inside]) * m0 + lam[inside] * m1
    excess = line - val[inside] if higher_is_better else val[inside] - line
    return float(np.max(excess))


def barrier_paths(model: nn.Module, named_pairs: Mapping[str, tuple], loader: Iterable,
                  lambdas: Sequence[float] | None = None, *,
                  bn_reestimate_loader: Iterable | None = None, batched: bool = True,
                  device=None, channels_last: bool = True,
                  bn_reestimate: bool | None = None) -> AnalysisResult:
    """Loss/accuracy along the line of every pair, with barrier heights (Figures 4, 12-18).

    ``named_pairs``: label -> ``(theta_0, theta_1)``; ``lambdas`` default to 11 points on
    [0, 1] (``np.linspace(-1, 2, 31)`` extrapolates). ``model``'s weights are left unchanged.
    ``channels_last`` (default) runs NHWC: faster on CPU, rounding differs at ~1e-7.
    BatchNorm statistics are re-estimated at every point whenever the model has BatchNorm,
    on ``bn_reestimate_loader`` or ``loader`` (``bn_reestimate=False`` turns it off).
    """
    reest = bn_loader(model, loader, bn_reestimate_loader, bn_reestimate)
    lambdas = list(np.linspace(0, 1, 11) if lambdas is None else lambdas)
    frames, summary = [], {}
    fn = evaluate_path_batched if batched else evaluate_path
    for name, (t0, t1) in named_pairs.items():
        df = fn(model, t0, t1, lambdas, loader, reest, device,
                channels_last=channels_last, bn_reestimate=reest is not None)
        frames.append(df.assign(pair=name))
        has_ends = any(np.isclose(lambdas, 0)) and any(np.isclose(lambdas, 1))
        summary[name] = {
            "loss_barrier": barrier_height(df, "loss") if has_ends else float("nan"),
            "accuracy_barrier": barrier_height(df, "accuracy") if has_ends else float("nan"),
            "min_loss": float(df["loss"].min()), "max_accuracy": float(df["accuracy"].max())}
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
    lambdas: list[float] = Field(default_factory=lambda: [-1.0, -0.5, 0.0, 0.25, 0.5, 0.75,
                                                          1.0, 1.5, 2.0], min_length=1,
                                 description="points (1 - lambda) theta_0 + lambda theta_1")
    bn_reestimate: bool | None = Field(None, description="re-estimate BatchNorm statistics at every "
                                       "weight-space point; default (unset): whenever the "
                                       "model has BatchNorm (extrapolated running variances "
                                       "are meaningless)")


def run(ctx: AuditContext, lambdas: Sequence[float] = (0.0, 0.5, 1.0),
        bn_reestimate: bool | None = None) -> AnalysisResult:
    """Barriers between the two P-T and the two RI-T models of ``ctx`` (section 3.3)."""
    inp = transfer_inputs(ctx)
    named = {f"{a} - {b}": (inp.models[a].state_dict(), inp.models[b].state_dict())
             for a, b in inp.pairs[:2]}
    loader = batches(ctx)
    return barrier_paths(inp.first, named, loader, list(lambdas), bn_reestimate_loader=loader,
                         bn_reestimate=bn_reestimate)


def finding(result: AnalysisResult) -> Finding | None:
    """Loss barrier of every pair."""
    s = result.summary
    parts = [f"{html.escape(k)} loss barrier {fmt(v['loss_barrier'])}" for k, v in s.items()]
    return Finding.from_html("<b>Performance barriers</b> on the line between two solutions: "
                   + "; ".join(parts) + ".", {k: v["loss_barrier"] for k, v in s.items()})


register_analysis("barriers", title="Performance barriers on the line between solutions",
                  paper="paper 003, section 3.3", section="what_transferred", order=5,
                  options=BarriersOptions, run=run, finding=finding,
                  applies=lambda ctx: bool(transfer_inputs(ctx).pairs))

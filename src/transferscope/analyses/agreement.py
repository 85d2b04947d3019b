"""Cross-model agreement (paper 000, Fig. 5 and 6): Pearson R of per-class recall of M^st
between transferred models (e.g. architectures) and of per-class bias between every pair of
target models, with scatter plots. Uses the same cached forward passes as
:mod:`.retained_knowledge` and :mod:`.interference_bias`.

Each R has a bootstrap interval that resamples source classes (the views of one image are
not independent). Paper 000's claim (``000.agreement``: models fine-tuned from the same
source agree on which source classes are biased) expects R > 0 for a pair of fine-tuned (not
from-scratch) models: the bias pair when there is one, else the recall pair."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from transferscope import roles
from transferscope.analyses import _resolution
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, first_set, fmt, register_analysis
from transferscope.analyses._stats import pearson
from transferscope.analyses.context import AuditContext
from transferscope.analyses.interference_bias import bias_matrix
from transferscope.analyses.retained_knowledge import per_class_recall
from transferscope.findings import ClaimCheck
from transferscope.stats import Interval, cluster_statistic, verdict_of

__all__ = ["agreement_check", "finding", "pearson_interval", "resolution", "run", "UNIT"]

UNIT = "source class"


def pearson_interval(x, y, seed: int = 0) -> Interval:
    """Pearson R over the classes finite in both, with a bootstrap interval over classes.

    Example:
        >>> x = np.arange(10.0)
        >>> iv = pearson_interval(x, 2 * x + 1)
        >>> round(iv.value, 6), round(iv.lo, 6), iv.n
        (1.0, 1.0, 10)
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    return cluster_statistic(lambda i: pearson(x[i], y[i])[0], len(x), unit=UNIT, seed=seed)


def run(ctx: AuditContext) -> AnalysisResult:
    rows, pairs, summary = [], [], {}
    first = ctx.target_classes[0]
    for set_name, data in ctx.source_data.items():
        recall = {}
        for name in ctx.transferred():
            pred = ctx.predict(ctx.m_st(name), data)
            recall[name] = per_class_recall(pred.preds, pred.labels, ctx.source.num_classes)
        bias = {}
        for name, model in ctx.targets.items():
            pred = ctx.predict(model, data)
            bias[name] = bias_matrix(pred.preds, pred.labels, ctx.source.num_classes,
                                     len(ctx.target_classes))[:, 0]
        for what, values in (("recall of M^st", recall), (f"bias toward {first}", bias)):
            for a, b in combinations(values, 2):
                iv = pearson_interval(values[a].numpy(), values[b].numpy())
                rows.append({"source images": set_name, "quantity": what, "model A": a,
                             "model B": b, "Pearson R": iv.value, "R lo": iv.lo, "R hi": iv.hi,
                             "classes": iv.n})
                summary[f"{set_name}/{what}/{a} vs {b}"] = {
                    "r": iv.value, "r_iv": iv.to_dict(), "quantity": what, "models": [a, b],
                    "bias": what != "recall of M^st", "roles": [_role(ctx, a), _role(ctx, b)]}
                pairs.append((set_name, what, a, b, values[a].numpy(), values[b].numpy(),
                              iv.value))
    result = AnalysisResult("agreement", summary, {"pearson": pd.DataFrame(rows)})
    if pairs:
        result.figures["scatter"] = _scatter(pairs)
    return result


def _role(ctx: AuditContext, name: str) -> str:
    entry = ctx.entries.get(name)
    return entry.role if entry is not None else roles.OTHER


def _scatter(pairs):
    from transferscope.analyses._figures import subplots

    n = len(pairs)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (set_name, what, a, b, x, y, r) in zip(axes.flat, pairs):
        ax.axis("on")
        ax.scatter(x, y, s=6, alpha=0.5)
        ax.set_xlabel(a, fontsize=7)
        ax.set_ylabel(b, fontsize=7)
        ax.set_title(f"{what} ({set_name})\nR = {r:.2f}", fontsize=7)
    fig.tight_layout()
    return fig


def agreement_check(pairs: dict) -> ClaimCheck | None:
    """``000.agreement`` from the first pair of fine-tuned (not from-scratch) models: on the
    bias toward a target class if there is such a pair, else on recall of M^st."""
    fine = [(k, v) for k, v in pairs.items() if isinstance(v, dict)
            and roles.RIT not in map(roles.role, v.get("roles", [roles.RIT]))]
    fine.sort(key=lambda kv: not kv[1]["bias"])
    if not fine:
        return None
    key, v = fine[0]
    iv = Interval(**v["r_iv"])
    verdict, why = verdict_of(iv, ">")
    return ClaimCheck("000.agreement", verdict, f"{why}: Pearson R of {v['quantity']} between "
                      f"{' and '.join(v['models'])} is {iv}", iv,
                      "Pearson R over source classes, cluster bootstrap over source classes")


def finding(result: AnalysisResult) -> Finding | None:
    """Pearson R between models on the first source-image set, per quantity, with intervals
    over source classes."""
    first = first_set(result.summary)  # "<quantity>/<A> vs <B>" -> {...} (or R, older)
    if not first:
        return None
    clauses, estimates = [], []
    for k, v in first.items():
        name = k.replace("/", ": ", 1)
        if isinstance(v, dict):
            iv = Interval(**v["r_iv"])
            clauses.append(f"{name} R = {iv}")
            estimates.append((f"Pearson R, {name}", iv))
        else:
            clauses.append(f"{name} R = {fmt(v)}")
    check = agreement_check(first)
    return Finding("Cross-model agreement", "over source classes (Pearson R; paper 000: models "
                   "that share a source agree)", clauses=tuple(clauses),
                   estimates=tuple(estimates), checks=(check,) if check else (),
                   numbers={k: v["r"] if isinstance(v, dict) else v for k, v in first.items()})


def resolution(res, results: dict) -> list[str]:
    """Agreement correlates per-class recall and bias: say when those take few values."""
    return _resolution.per_class_notes(results, "recall and bias")


register_analysis("agreement", needs=("source_logits",), title="Cross-model agreement", paper="paper 000, Fig. 5, 6",
                  section="memory", order=3, run=run, finding=finding, resolution=resolution,
                  charts={"pearson": dict(kind="heatmap", rows="model A", cols="model B",
                                          value="Pearson R", facets=["source images", "quantity"],
                                          unit="Pearson R of the per-class values")})

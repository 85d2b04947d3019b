"""Cross-model agreement (paper 000, Fig. 5 and 6): Pearson R of per-class recall of M^st
between transferred models (e.g. architectures) and of per-class bias between every pair of
target models, with scatter plots. Uses the same cached forward passes as
:mod:`.retained_knowledge` and :mod:`.interference_bias`."""

from __future__ import annotations

import html
from itertools import combinations

import pandas as pd

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, first_set, fmt, register_analysis
from transferscope.analyses._stats import pearson
from transferscope.analyses.context import AuditContext
from transferscope.analyses.interference_bias import bias_matrix
from transferscope.analyses.retained_knowledge import per_class_recall


def run(ctx: AuditContext) -> AnalysisResult:
    rows, pairs = [], []
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
                r, n = pearson(values[a].numpy(), values[b].numpy())
                rows.append({"source images": set_name, "quantity": what, "model A": a,
                             "model B": b, "Pearson R": r, "classes": n})
                pairs.append((set_name, what, a, b, values[a].numpy(), values[b].numpy(), r))
    result = AnalysisResult("agreement", {f"{r['source images']}/{r['quantity']}/"
                                          f"{r['model A']} vs {r['model B']}": r["Pearson R"]
                                          for r in rows}, {"pearson": pd.DataFrame(rows)})
    if pairs:
        result.figures["scatter"] = _scatter(pairs)
    return result


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


def finding(result: AnalysisResult) -> Finding | None:
    """Pearson R between models on the first source-image set, per quantity."""
    first = first_set(result.summary)  # "<quantity>/<A> vs <B>" -> R
    if not first:
        return None
    parts = [f"{html.escape(k.replace('/', ': ', 1))} R = {fmt(v)}" for k, v in first.items()]
    return Finding.from_html("<b>Cross-model agreement</b> over source classes (Pearson R; paper 000: "
                   "models that share a source agree) - " + "; ".join(parts) + ".", first)


register_analysis("agreement", title="Cross-model agreement", paper="paper 000, Fig. 5, 6",
                  section="memory", order=3, run=run, finding=finding)

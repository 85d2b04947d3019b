"""Interference bias of source classes toward target classes (paper 000, eq. 1, Table 2).

Feed images of each source class c_i to a target model M and count where they land:
``B[i, j] = |{x in X_i : M(x) = c_j}| / |X_i|`` (eq. 1). With two target classes a and b,
``B_a = 1 - B_b`` is binned as in Table 2; with more, each class gets a bias strength
``(max_j B[i, j] - 1/T) / (1 - 1/T)`` in [0, 1] (0: spread evenly, 1: always one class).
The table also gives each model's base rate (mean B over source classes): a model that sends
almost every source image to one class has many "strongly biased" classes without any of them
being special, so read the counts against it; the class-specific spread (standard deviation
of B over source classes, averaged over target classes) is high only when different source
classes push toward different targets.
"""

from __future__ import annotations

import html

import pandas as pd
from pydantic import Field
import torch

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, first_set, register_analysis
from transferscope.analyses.context import AuditContext

#: Table 2 bins of B_a in percent: [0,20[, [20,40[, [40,60[, [60,80[, [80,100].
BIAS_EDGES = (20, 40, 60, 80)
#: Paper 000 Table 2 (ants = class a); columns as BIAS_EDGES bins from high-bees to high-ants.
PAPER_TABLE2 = {"RN-18 (ImageNet), paper 000": [59, 176, 247, 290, 228],
                "VGG-16 (ImageNet), paper 000": [67, 152, 339, 310, 132],
                "RN-18 (SimCLR), paper 000": [3, 118, 503, 355, 21],
                "Baseline (scratch), paper 000": [13, 103, 628, 253, 3]}
STRONG = 0.8


def bias_matrix(preds: torch.Tensor, labels: torch.Tensor, num_source: int,
                num_target: int) -> torch.Tensor:
    """Eq. 1: ``(N,) target predictions, (N,) source labels -> (S, T)`` fractions.

    Rows of source classes without images are NaN.

    Example:
        >>> bias_matrix(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 2]), 3, 2).tolist()
        [[0.6666666666666666, 0.3333333333333333], [nan, nan], [0.0, 1.0]]
    """
    counts = torch.zeros(num_source, num_target, dtype=torch.float64)
    counts.index_put_((labels.long(), preds.long()), torch.ones(len(preds), dtype=torch.float64),
                      accumulate=True)
    totals = counts.sum(1, keepdim=True)
    return torch.where(totals > 0, counts / totals.clamp(min=1), torch.nan)


def bias_strength(bias: torch.Tensor) -> torch.Tensor:
    """``(S, T) -> (S,)`` in [0, 1]: 0 when spread evenly over targets, 1 when all in one."""
    t = bias.shape[1]
    return (bias.max(dim=1).values - 1 / t) / (1 - 1 / t)


def two_class_bins(bias_a: torch.Tensor) -> list[int]:
    """Counts of classes per Table-2 bin of ``B_a`` (fractions; NaN ignored)."""
    pct = bias_a[~bias_a.isnan()] * 100
    index = sum((pct >= edge).long() for edge in BIAS_EDGES)
    return torch.bincount(torch.as_tensor(index), minlength=5).tolist() if len(pct) else [0] * 5


def bin_labels(a: str, b: str) -> list[str]:
    return [f"high {b} bias", f"slight {b} bias", "neutral", f"slight {a} bias", f"high {a} bias"]


def run(ctx: AuditContext, top: int = 10) -> AnalysisResult:
    """Bias matrices of every target model on every source-image set."""
    classes = ctx.target_classes
    t = len(classes)
    names = next(iter(ctx.source_data.values())).classes
    rows, long, strongest, summary, mats = [], [], [], {}, {}
    for set_name, data in ctx.source_data.items():
        present = torch.unique(data.targets)
        for model_name, model in ctx.targets.items():
            pred = ctx.predict(model, data, desc=f"bias: {model_name} on {set_name}")
            mat = bias_matrix(pred.preds, pred.labels, ctx.source.num_classes, t)
            mats[(set_name, model_name)] = mat
            strength = bias_strength(mat)
            n_strong = int((mat[present].max(1).values >= STRONG).sum())
            base = mat[present].mean(0)  # the model's base rate on source images
            row = {"source images": set_name, "model": model_name, "classes": len(present),
                   f"strongly biased (max B >= {STRONG})": n_strong,
                   "mean bias strength": float(strength[present].mean()),
                   **{f"base rate {c}": float(base[j]) for j, c in enumerate(classes)},
                   "class-specific spread": float(mat[present].std(0).mean())}
            if t == 2:
                row.update(dict(zip(bin_labels(*classes), two_class_bins(mat[:, 0]))))
            rows.append(row)
            summary[f"{set_name}/{model_name}"] = {
                "strongly_biased": n_strong, "mean_strength": row["mean bias strength"],
                "base_rate": {c: float(base[j]) for j, c in enumerate(classes)},
                "spread": row["class-specific spread"],
                "toward": {c: int(((mat[present].argmax(1) == j) &
                                   (mat[present].max(1).values >= STRONG)).sum())
                           for j, c in enumerate(classes)}}
            for j, cname in enumerate(classes):
                col = mat[present, j]
                order = torch.argsort(col, descending=True)[:top]
                for rank, k in enumerate(order.tolist()):
                    c = int(present[k])
                    strongest.append({"source images": set_name, "model": model_name,
                                      "toward": cname, "rank": rank + 1, "class": c,
                                      "class name": names[c], "bias": float(col[k])})
            for c in present.tolist():
                long.append({"source images": set_name, "model": model_name, "class": c,
                             "class name": names[c], "strength": float(strength[c]),
                             **{f"B[{cn}]": float(mat[c, j]) for j, cn in enumerate(classes)}})
    if t == 2:
        for name, counts in PAPER_TABLE2.items():
            rows.append({"source images": "ImageNet val (paper)", "model": name,
                         "classes": 1000, **dict(zip(bin_labels("ants", "bees"), counts))})
    result = AnalysisResult("interference_bias", summary,
                            {"table": pd.DataFrame(rows), "most_biased": pd.DataFrame(strongest),
                             "per_class": pd.DataFrame(long)})
    result.figures["bias_hist"] = _figure(mats, classes)
    return result


def _figure(mats, classes):
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(6, 3.5))
    for (set_name, model_name), mat in mats.items():
        vals = mat[:, 0][~mat[:, 0].isnan()].numpy() * 100
        ax.hist(vals, bins=[0, 20, 40, 60, 80, 100], histtype="step", linewidth=1.5,
                label=f"{model_name} ({set_name})")
    ax.set_xlabel(f"bias toward '{classes[0]}' B (%)")
    ax.set_ylabel("source classes")
    ax.legend(fontsize=7)
    return fig


class BiasOptions(AnalysisOptions):
    top: int = Field(10, ge=1, description="most biased source classes listed per model")


def finding(result: AnalysisResult) -> Finding | None:
    """Strongly biased source classes per model, with the target class they go to."""
    e = html.escape
    s = first_set(result.summary)
    parts = []
    for k, v in s.items():
        toward = ", ".join(f"{n} toward '{e(c)}'" for c, n in v["toward"].items())
        base = "/".join(f"{100 * r:.0f}%" for r in v.get("base_rate", {}).values())
        parts.append(f"{e(k)}: {v['strongly_biased']} ({toward}"
                     + (f"; base rate {base})" if base else ")"))
    return Finding.from_html("<b>Interference bias</b>: source classes sending at least 80% of their "
                   "images to one target class - " + "; ".join(parts) + ".",
                   {k: v["strongly_biased"] for k, v in s.items()})


register_analysis("interference_bias", title="Interference bias of source classes",
                  paper="paper 000, eq. 1, Table 2", section="memory", options=BiasOptions,
                  order=2, run=run, finding=finding)

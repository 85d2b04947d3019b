"""Retained source knowledge (paper 000, section 2.1, Table 1).

Re-attach the source head to each fine-tuned backbone (M^st) and measure the recall of every
source class on labelled source images; M^s itself is the reference.
"""

from __future__ import annotations

import html

import pandas as pd
import torch

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, first_set, register_analysis
from transferscope.analyses._stats import bootstrap_ci, ci_fields, per_class_rate
from transferscope.analyses._thumbs import class_gallery
from transferscope.analyses.context import AuditContext

#: Paper 000 Table 1 bins (recall in percent): "<50", then half-open [50,60[ ... and [90,100]
#: (a recall of exactly 50 % counts toward "recall >= 50 %", as in the paper's 1000 - 495).
RECALL_BINS = ["<50", "[50,60[", "[60,70[", "[70,80[", "[80,90[", "[90,100]"]

#: Paper 000 Table 1 (ImageNet validation set, 50 images per class).
PAPER_TABLE1 = {"RN-18 (ImageNet), paper 000": [495, 185, 164, 100, 49, 7],
                "VGG-16 (ImageNet), paper 000": [671, 128, 97, 63, 33, 7]}


def per_class_recall(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of every class, ``(N,), (N,) -> (C,)``; NaN for classes without samples.

    Example:
        >>> per_class_recall(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]), 4).tolist()
        [0.5, 1.0, 1.0, nan]
    """
    return per_class_rate(preds == labels, labels, num_classes)


def recall_bins(recall: torch.Tensor) -> list[int]:
    """Counts of classes per Table-1 bin; classes with NaN recall are not counted.

    Percentages are rounded to 4 decimals first, so 0.7 * 100 or a float32 0.7 land on
    their edge. ``sum(bins[1:])`` is the number of classes with recall >= 50 %.

    Example:
        >>> recall_bins(torch.tensor([0.5, 0.4999, 0.6, 1.0, 0.0]))
        [2, 1, 1, 0, 0, 1]
    """
    pct = torch.round(recall[~recall.isnan()].double() * 100, decimals=4)
    index = (pct >= 50).long() * (1 + sum((pct >= edge).long() for edge in (60, 70, 80, 90)))
    return torch.bincount(index, minlength=len(RECALL_BINS)).tolist()


def recall_intervals(recall: torch.Tensor, seed: int = 0) -> dict:
    """95 % bootstrap intervals over classes (NaN recalls left out): ``mean_recall_ci95``,
    ``classes_recall_ge_50_ci95``, ``bins_ci95`` (per bin) and ``n`` (classes)."""
    rec = recall[~recall.isnan()].double()
    bins_of = lambda i: recall_bins(rec[torch.as_tensor(i)])  # noqa: E731
    out = ci_fields("mean_recall", rec.numpy(), seed=seed)
    lo_hi = {b: bootstrap_ci(lambda i, j=j: bins_of(i)[j], len(rec), seed=seed, n_boot=400)
             for j, b in enumerate(RECALL_BINS)}
    out["bins_ci95"] = {b: list(v) for b, v in lo_hi.items()}
    out["classes_recall_ge_50_ci95"] = list(bootstrap_ci(lambda i: sum(bins_of(i)[1:]),
                                                         len(rec), seed=seed, n_boot=400))
    return out


def run(ctx: AuditContext) -> AnalysisResult:
    """Per-source-class recall of M^s and of M^st for every transferred target model."""
    rows, per_class, summary = [], {}, {}
    for set_name, data in ctx.source_data.items():
        labels_present = torch.unique(data.targets)
        models = {f"source {arch} (M^s)": m for arch, m in ctx.sources.items()}
        models.update({f"{k} + source head (M^st)": ctx.m_st(k) for k in ctx.transferred()})
        for model_name, model in models.items():
            pred = ctx.predict(model, data, desc=f"recall: {model_name} on {set_name}")
            rec = per_class_recall(pred.preds, pred.labels, ctx.source.num_classes)
            bins = recall_bins(rec)
            rows.append({"source images": set_name, "model": model_name,
                         **dict(zip(RECALL_BINS, bins)), "All": sum(bins),
                         "mean recall": float(rec[labels_present].mean())})
            per_class[(set_name, model_name)] = rec
            summary[f"{set_name}/{model_name}"] = {
                "classes": sum(bins), "mean_recall": float(rec[labels_present].mean()),
                "classes_recall_ge_50": sum(bins[1:]),  # the same rounding as the bins
                "bins": dict(zip(RECALL_BINS, bins)), **recall_intervals(rec)}
    for name, counts in PAPER_TABLE1.items():
        rows.append({"source images": "ImageNet val (paper)", "model": name,
                     **dict(zip(RECALL_BINS, counts)), "All": 1000,
                     "mean recall": float("nan")})
    names = ctx.source_data and next(iter(ctx.source_data.values())).classes
    long = []
    for (set_name, model_name), rec in per_class.items():
        for c in torch.nonzero(~rec.isnan()).flatten().tolist():
            long.append({"source images": set_name, "model": model_name, "class": c,
                         "class name": names[c], "recall": float(rec[c])})
    result = AnalysisResult("retained_knowledge", summary,
                            {"bins": pd.DataFrame(rows), "per_class": pd.DataFrame(long)})
    result.figures["recall_hist"] = _figure(per_class)
    gallery, result.images = class_gallery(ctx.source_data)  # report drill-down thumbnails
    result.tables["gallery"] = pd.DataFrame(gallery)
    result.notes.append("Recall per class is a fraction over the images (and augmented views) "
                        "of that class in each source-image set.")
    return result


def _figure(per_class):
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(6, 3.5))
    for (set_name, model_name), rec in per_class.items():
        vals = rec[~rec.isnan()].numpy() * 100
        ax.hist(vals, bins=[0, 50, 60, 70, 80, 90, 100], histtype="step", linewidth=1.5,
                label=f"{model_name} ({set_name})")
    ax.set_xlabel("recall of source class (%)")
    ax.set_ylabel("source classes")
    ax.legend(fontsize=7)
    return fig


def finding(result: AnalysisResult) -> Finding | None:
    """How many source classes each M^st still recognises at recall >= 50% (95 % interval
    over classes)."""
    from transferscope.analyses._stats import with_ci

    e = html.escape
    s = first_set(result.summary)
    parts = [f"{e(k.replace(' + source head (M^st)', ''))} "
             f"{with_ci(v['classes_recall_ge_50'], v.get('classes_recall_ge_50_ci95'), '.0f')}"
             f" of {v['classes']}" for k, v in s.items() if "M^st" in k]
    ref = [f"{e(k.replace('source ', '').replace(' (M^s)', ''))} itself: "
           f"{v['classes_recall_ge_50']}" for k, v in s.items() if "M^s)" in k][:1]
    if not parts:
        return None
    return Finding.from_html("<b>Retained knowledge</b>: with the source head put back, the fine-tuned "
                   "backbones still recognise source classes at recall &ge; 50%: "
                   + "; ".join(parts) + (f" ({ref[0]})." if ref else "."),
                   {k: v["classes_recall_ge_50"] for k, v in s.items()})


register_analysis("retained_knowledge", title="Retained knowledge: source-class recall of M^st",
                  paper="paper 000, Table 1", section="memory", order=1, run=run, finding=finding)

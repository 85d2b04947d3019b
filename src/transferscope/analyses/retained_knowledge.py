"""Retained source knowledge (paper 000, section 2.1, Table 1).

Re-attach the source head to each fine-tuned backbone (M^st) and measure the recall of every
source class on labelled source images; M^s itself is the reference.

Intervals resample the source class (the views of one image are not independent); two
models are compared on the same classes as pairs (mean per-class recall difference, cluster
bootstrap and sign-flip p). Paper 000's claim (``000.retained``) is tested on the first
fine-tuned M^st: against a from-scratch (random-init) backbone with the same source head
when the audit has one (paired over source classes), else against chance, a mean per-class
recall of 1/S: any prediction that ignores the image (uniform guessing or one constant
class) has exactly that mean recall over S classes.
"""

from __future__ import annotations

import pandas as pd
import torch

from transferscope import roles
from transferscope.analyses import _resolution
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, first_set, register_analysis
from transferscope.analyses._stats import bootstrap_ci, ci_fields, per_class_rate
from transferscope.analyses._thumbs import class_gallery
from transferscope.analyses.context import AuditContext
from transferscope.findings import ClaimCheck
from transferscope.stats import Comparison, Interval, cluster_mean, paired_difference, verdict_of

__all__ = ["finding", "paired_recalls", "PAPER_TABLE1", "per_class_recall", "RECALL_BINS",
           "recall_bins", "recall_intervals", "recall_summary", "resolution", "retained_check",
           "run", "UNIT"]

UNIT = "source class"

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


def recall_summary(rec: torch.Tensor, present: torch.Tensor, role: str = "other") -> dict:
    """Summary of one model's per-class recall ``(S,)`` over the classes ``present``: the
    Table-1 counts, the mean per-class recall and the share with recall >= 50 % with
    intervals over source classes, chance (1/S) and the model's role."""
    bins = recall_bins(rec)
    vals = rec[present].double()
    return {"classes": sum(bins), "mean_recall": float(vals.mean()),
            "classes_recall_ge_50": sum(bins[1:]),  # the same rounding as the bins
            "bins": dict(zip(RECALL_BINS, bins)), **recall_intervals(rec),
            "mean_recall_iv": cluster_mean(vals.numpy(), unit=UNIT).to_dict(),
            "share_recall_ge_50_iv": cluster_mean(
                (torch.round(vals * 100, decimals=4) >= 50).double().numpy(),
                unit=UNIT).to_dict(),
            "chance": 1.0 / len(rec), "role": role}


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
            summary[f"{set_name}/{model_name}"] = recall_summary(
                rec, labels_present, _role(ctx, model_name))
        summary.update(paired_recalls(set_name, {k: per_class[(set_name, k)][labels_present]
                                                 for k in models}))
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


def _role(ctx: AuditContext, model_name: str) -> str:
    """Role of the target model behind an M^st row ("source" for M^s rows)."""
    name = model_name.removesuffix(" + source head (M^st)")
    entry = ctx.entries.get(name) if name != model_name else None
    return entry.role if entry is not None else roles.P


def paired_recalls(set_name: str, recalls: dict) -> dict:
    """Paired comparisons over the same source classes: every M^st against the first M^s and
    against the other M^st (``"<set>/paired"`` -> ``{"a vs b": Comparison.to_dict()}``)."""
    st = [k for k in recalls if "M^st" in k]
    src = [k for k in recalls if "M^s)" in k]
    pairs = [(a, b) for a in st for b in src[:1]] + [
        (a, b) for i, a in enumerate(st) for b in st[i + 1:]]
    out = {}
    for a, b in pairs:
        comp = paired_difference(recalls[a].double().numpy(), recalls[b].double().numpy(),
                                 names=(_short(a), _short(b)), unit=UNIT)
        out[f"{a} vs {b}"] = comp.to_dict()
    return {f"paired/{set_name}": out} if out else {}


def _short(name: str) -> str:
    return name.replace(" + source head (M^st)", " M^st").replace("source ", "").replace(
        " (M^s)", " M^s")


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


def retained_check(models: dict, paired: dict) -> ClaimCheck | None:
    """Paper 000's claim for the first fine-tuned M^st (role not RI-T): its mean
    per-class recall above a from-scratch M^st on the same classes (paired) when there is
    one, else above chance (1/S)."""
    st = {k: v for k, v in models.items() if "M^st" in k and "mean_recall_iv" in v}
    ft = [k for k, v in st.items() if roles.role(v.get("role")) != roles.RIT]
    if not ft:
        return None
    name = ft[0]
    scratch = [k for k, v in st.items() if roles.role(v.get("role")) == roles.RIT]
    for other in scratch:
        key, sign = ((f"{name} vs {other}", 1) if f"{name} vs {other}" in paired
                     else (f"{other} vs {name}", -1))
        if key in paired:
            c = paired[key]
            d = Interval(**c["difference"])
            if sign < 0:
                d = Interval(-d.value, -d.hi, -d.lo, d.unit, d.n, d.level, d.method)
            verdict, why = verdict_of(d, ">")
            return ClaimCheck("000.retained", verdict, f"{why}: mean per-class recall of "
                              f"{_short(name)} minus {_short(other)} (a from-scratch backbone "
                              f"with the same source head) is {d}", d, c["test"])
    v = st[name]
    iv = Interval(**v["mean_recall_iv"])
    verdict, why = verdict_of(iv, ">", null=v["chance"])
    return ClaimCheck("000.retained", verdict, f"{why} (chance: mean per-class recall "
                      f"{v['chance']:.3g} = 1/S; no from-scratch backbone to compare): mean "
                      f"per-class recall of {_short(name)} is {iv}", iv,
                      "cluster bootstrap over source classes, against chance 1/S")


def finding(result: AnalysisResult) -> Finding | None:
    """How many source classes each M^st still recognises at recall >= 50 % (interval over
    source classes), paired comparisons on the same classes, and paper 000's claim."""
    from transferscope.analyses._stats import with_ci

    s = first_set(result.summary)
    parts = [f"{k.replace(' + source head (M^st)', '')} "
             f"{with_ci(v['classes_recall_ge_50'], v.get('classes_recall_ge_50_ci95'), '.0f')}"
             f" of {v['classes']}" for k, v in s.items() if "M^st" in k]
    ref = [f"{k.replace('source ', '').replace(' (M^s)', '')} itself: "
           f"{v['classes_recall_ge_50']}" for k, v in s.items() if "M^s)" in k][:1]
    if not parts:
        return None
    first = next(iter(result.summary)).split("/", 1)[0]
    paired = result.summary.get(f"paired/{first}") or {}
    clauses = parts + ref
    for c in paired.values():
        comp = Comparison(c["a"], c["b"], Interval(**c["difference"]), c["p_value"], c["test"])
        clauses.append(comp.words("in mean per-class recall"))
    estimates = tuple((f"mean per-class recall, {_short(k)}", Interval(**v["mean_recall_iv"]))
                      for k, v in s.items() if "mean_recall_iv" in v)
    check = retained_check(s, paired)
    return Finding("Retained knowledge", "with the source head put back, the fine-tuned "
                   "backbones still recognise source classes at recall \u2265 50%",
                   clauses=tuple(clauses), estimates=estimates,
                   checks=(check,) if check else (),
                   numbers={k: v["classes_recall_ge_50"] for k, v in s.items()})


def resolution(res, results: dict) -> list[str]:
    """Where each class's recall is a fraction over few samples, and the Table-1 bins that
    cannot be filled by construction."""
    def empty_bins(n: int, pct: list[float]) -> str:
        hit = {(p >= 50) * (1 + sum(p >= e for e in (60, 70, 80, 90))) for p in pct}
        empty = [b for i, b in enumerate(RECALL_BINS) if i not in hit]
        return f"; the bins {', '.join(empty)} are empty by construction" if empty else ""
    return _resolution.per_class_notes(results, "recall", empty_bins)


register_analysis("retained_knowledge", needs=("source_logits",), title="Retained knowledge: source-class recall of M^st",
                  paper="paper 000, Table 1", section="memory", order=1, run=run, finding=finding,
                  resolution=resolution, gallery=dict(widget="strips", by="class"),
                  drill=(dict(widget="gallery", heading="Image and views"),
                         dict(widget="bars", table="per_class", value="recall",
                              heading="Recall of this class per model")),
                  charts={"bins": dict(categories=RECALL_BINS, total="All",
                                       x="recall of the source class (%)",
                                       y="share of source classes (%)", replaces="recall_hist")})

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

"Strongly biased" needs evidence at the class's number of views (:func:`class_bias_tests`):
its largest share must reach ``STRONG`` *and* a one-sided binomial test must find the count
toward that target above the model's base rate for it (the mean share of the *other* source
classes, each class weighing the same; Bonferroni over the T targets, as the target is the
class's largest), Benjamini-Hochberg across classes at q = 0.05. The null is the base rate,
not 1/T: a model that sends almost every image to one class has no class-specific bias.
Classes with fewer than ``MIN_VIEWS`` views are not tested (a caveat says so): with one view
per class every class has B = 1 toward some target by construction. Intervals resample the
source class (views of one image are not independent); two models are compared on the same
classes as pairs.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from transferscope import roles
from transferscope.analyses import _resolution
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, first_set, register_analysis
from transferscope.analyses.context import AuditContext
from transferscope.findings import ClaimCheck
from transferscope.stats import (Comparison, Interval, Verdict, benjamini_hochberg,
                                 cluster_mean, paired_difference, too_few)

__all__ = ["bias_check", "bias_counts", "BIAS_EDGES", "bias_matrix", "bias_strength", "BiasOptions",
           "bin_labels", "class_bias_tests", "FDR_Q", "finding", "MIN_VIEWS", "model_summary",
           "PAPER_TABLE2", "resolution", "run", "STRONG", "two_class_bins", "UNIT"]

#: Table 2 bins of B_a in percent: [0,20[, [20,40[, [40,60[, [60,80[, [80,100].
BIAS_EDGES = (20, 40, 60, 80)
#: Paper 000 Table 2 (ants = class a); columns as BIAS_EDGES bins from high-bees to high-ants.
PAPER_TABLE2 = {"RN-18 (ImageNet), paper 000": [59, 176, 247, 290, 228],
                "VGG-16 (ImageNet), paper 000": [67, 152, 339, 310, 132],
                "RN-18 (SimCLR), paper 000": [3, 118, 503, 355, 21],
                "Baseline (scratch), paper 000": [13, 103, 628, 253, 3]}
STRONG = 0.8
#: Views a source class needs before its bias is tested (below: "too few views to tell").
MIN_VIEWS = 5
#: False discovery rate of the per-class tests.
FDR_Q = 0.05
UNIT = "source class"


def bias_counts(preds: torch.Tensor, labels: torch.Tensor, num_source: int,
                num_target: int) -> torch.Tensor:
    """``(S, T)`` counts of views of each source class landing in each target class."""
    counts = torch.zeros(num_source, num_target, dtype=torch.float64)
    counts.index_put_((labels.long(), preds.long()), torch.ones(len(preds), dtype=torch.float64),
                      accumulate=True)
    return counts


def class_bias_tests(counts, min_views: int = MIN_VIEWS, q: float = FDR_Q,
                     strong: float = STRONG) -> dict:
    """Which source classes are strongly biased, by the evidence at their number of views.

    ``counts (S, T)``: views per source class and target class (rows without views are
    skipped). For a class with at least ``min_views`` views and its largest target j: the
    one-sided binomial p of its count toward j against the base rate of j (mean share of the
    other classes with views, clipped to half a view of theirs from 0 and 1), times T;
    Benjamini-Hochberg at ``q`` over the tested classes. Strongly biased: BH-significant and
    largest share >= ``strong``.

    Returns ``p`` (S,) (NaN: untested), ``adjusted`` (S,), ``strong`` (S,) booleans,
    ``toward`` (S,) target index, ``tested`` (S,) booleans, ``views`` (S,).

    Example:
        >>> c = np.array([[10, 0], [0, 10], [5, 5], [6, 4], [1, 0]])
        >>> out = class_bias_tests(c)
        >>> out["strong"].tolist(), out["tested"].tolist()
        ([True, True, False, False, False], [True, True, True, True, False])
        >>> c = np.array([[20, 0]] + [[2, 18]] * 9)  # one class against a bees-heavy base rate
        >>> class_bias_tests(c)["strong"].tolist()[:2]
        [True, False]
    """
    from scipy.stats import binom

    counts = np.asarray(counts, float)
    s, t = counts.shape
    views = counts.sum(1)
    present = views > 0
    share = np.divide(counts, views[:, None], out=np.full_like(counts, np.nan),
                      where=present[:, None])
    toward = np.where(present, np.nan_to_num(share, nan=-1).argmax(1), -1)
    p = np.full(s, np.nan)
    tested = present & (views >= min_views) & (present.sum() >= 2)
    for i in np.flatnonzero(tested):
        others = present.copy()
        others[i] = False
        j = toward[i]
        half = 0.5 / views[others].sum()
        base = float(np.clip(share[others, j].mean(), half, 1 - half))
        k = counts[i, j]
        p[i] = min(1.0, t * float(binom.sf(k - 1, views[i], base)))
    keep, adjusted = benjamini_hochberg(p, q)
    big = np.where(present, np.nan_to_num(share, nan=0).max(1) >= strong - 1e-12, False)
    return {"p": p, "adjusted": adjusted, "strong": keep & big & tested, "toward": toward,
            "tested": tested, "views": views}


def bias_matrix(preds: torch.Tensor, labels: torch.Tensor, num_source: int,
                num_target: int) -> torch.Tensor:
    """Eq. 1: ``(N,) target predictions, (N,) source labels -> (S, T)`` fractions.

    Rows of source classes without images are NaN.

    Example:
        >>> bias_matrix(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 2]), 3, 2).tolist()
        [[0.6666666666666666, 0.3333333333333333], [nan, nan], [0.0, 1.0]]
    """
    counts = bias_counts(preds, labels, num_source, num_target)
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


def model_summary(counts: torch.Tensor, classes: list[str], seed: int = 0) -> tuple:
    """Per-model numbers of one source-image set from its ``(S, T)`` counts: tested strong
    bias, the descriptive share count, base rates and mean strength with intervals over
    source classes; returns ``(summary, strength (S,), class_bias_tests(...))``."""
    views = counts.sum(1)
    present = torch.nonzero(views > 0).flatten()
    mat = counts / views.clamp(min=1)[:, None]
    mat[views == 0] = torch.nan
    tests = class_bias_tests(counts.numpy())
    strength = bias_strength(mat)
    m = mat[present]
    high = m.max(1).values >= STRONG
    tested = tests["tested"][present.numpy()]
    strong = tests["strong"][present.numpy()]
    min_views = int(views[present].min()) if len(present) else 0
    caveat = too_few(min_views, MIN_VIEWS, "views per source class")
    if caveat:
        caveat += "; no class is called strongly biased at this size"
    return {
        "strongly_biased": int(strong.sum()), "tested_classes": int(tested.sum()),
        "high_share": int(high.sum()), "classes": len(present), "views_min": min_views,
        "mean_strength": float(strength[present].mean()) if len(present) else float("nan"),
        "mean_strength_iv": cluster_mean(strength[present].numpy(), unit=UNIT,
                                         seed=seed).to_dict(),
        "strong_share_iv": cluster_mean(strong[tested].astype(float), unit=UNIT,
                                        seed=seed).to_dict(),
        "base_rate": {c: float(m[:, j].mean()) for j, c in enumerate(classes)},
        "base_rate_iv": {c: cluster_mean(m[:, j].numpy(), unit=UNIT, seed=seed).to_dict()
                         for j, c in enumerate(classes)},
        "spread": float(m.std(0).mean()),
        "toward": {c: int(((m.argmax(1) == j) & high).sum()) for j, c in enumerate(classes)},
        "strongly_toward": {c: int((tests["toward"][present.numpy()] == j)[strong].sum())
                            for j, c in enumerate(classes)},
        "caveat": caveat or "", "test": f"binomial vs the model's base rate (other classes), "
        f"Bonferroni over {len(classes)} targets, BH q = {FDR_Q:g}; max B >= {STRONG:g}; "
        f"classes with >= {MIN_VIEWS} views"}, strength, tests


def run(ctx: AuditContext, *, top: int) -> AnalysisResult:
    """Bias matrices of every target model on every source-image set."""
    classes = ctx.target_classes
    t = len(classes)
    names = next(iter(ctx.source_data.values())).classes
    rows, long, strongest, summary, mats, pairs = [], [], [], {}, {}, []
    for set_name, data in ctx.source_data.items():
        present = torch.unique(data.targets)
        strengths = {}
        for model_name, model in ctx.targets.items():
            pred = ctx.predict(model, data, desc=f"bias: {model_name} on {set_name}")
            counts = bias_counts(pred.preds, pred.labels, ctx.source.num_classes, t)
            mat = bias_matrix(pred.preds, pred.labels, ctx.source.num_classes, t)
            mats[(set_name, model_name)] = mat
            info, strength, tests = model_summary(counts, classes)
            entry = ctx.entries.get(model_name)
            info["role"] = entry.role if entry is not None else roles.OTHER
            strengths[model_name] = strength[present].numpy()
            row = {"source images": set_name, "model": model_name, "classes": len(present),
                   f"max B >= {STRONG} (descriptive)": info["high_share"],
                   "strongly biased (tested)": info["strongly_biased"],
                   "tested classes": info["tested_classes"],
                   "mean bias strength": info["mean_strength"],
                   **{f"base rate {c}": r for c, r in info["base_rate"].items()},
                   "class-specific spread": info["spread"]}
            if t == 2:
                row.update(dict(zip(bin_labels(*classes), two_class_bins(mat[:, 0]))))
            rows.append(row)
            summary[f"{set_name}/{model_name}"] = info
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
                             **{f"B[{cn}]": float(mat[c, j]) for j, cn in enumerate(classes)},
                             "views": int(tests["views"][c]), "p (BH)": tests["adjusted"][c],
                             "strongly biased": bool(tests["strong"][c])})
        for a, b in combinations(strengths, 2):  # the same source classes: paired
            comp = paired_difference(strengths[a], strengths[b], names=(a, b), unit=UNIT)
            pairs.append({"source images": set_name, "model A": a, "model B": b,
                          "difference": comp.difference.value, "lo": comp.difference.lo,
                          "hi": comp.difference.hi, "p": comp.p_value, "classes":
                          comp.difference.n})
            summary.setdefault("paired_strength", {})[f"{set_name}: {a} vs {b}"] = \
                comp.to_dict()
    if t == 2:
        for name, counts in PAPER_TABLE2.items():
            rows.append({"source images": "ImageNet val (paper)", "model": name,
                         "classes": 1000, **dict(zip(bin_labels("ants", "bees"), counts))})
    tables = {"table": pd.DataFrame(rows), "most_biased": pd.DataFrame(strongest),
              "per_class": pd.DataFrame(long)}
    if pairs:
        tables["paired_strength"] = pd.DataFrame(pairs)
    result = AnalysisResult("interference_bias", summary, tables)
    result.figures["bias_hist"] = _figure(mats, classes)
    result.notes.append(
        f"Strongly biased (tested): max B >= {STRONG:g} and a one-sided binomial test against "
        f"the model's base rate (mean B of the other source classes), Bonferroni over the "
        f"targets, Benjamini-Hochberg q = {FDR_Q:g}; only classes with at least {MIN_VIEWS} "
        "views are tested. Intervals resample source classes.")
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


def _clause(name: str, v: dict) -> str:
    if "tested_classes" not in v:  # a result saved before the per-class tests
        toward = ", ".join(f"{n} toward '{c}'" for c, n in v["toward"].items())
        return f"{name}: {v['strongly_biased']} with max B >= {STRONG:g} ({toward})"
    toward = ", ".join(f"{n} toward '{c}'" for c, n in v["strongly_toward"].items() if n)
    base = "/".join(f"{100 * r:.0f}%" for r in v.get("base_rate", {}).values())
    tested = (f"{v['strongly_biased']} of {v['tested_classes']} tested classes strongly biased"
              + (f" ({toward})" if toward else "")) if v["tested_classes"] else "none tested"
    return (f"{name}: {tested}; {v['high_share']} of {v['classes']} with max B >= {STRONG:g} "
            f"(descriptive); base rate {base}")


def bias_check(models: dict) -> ClaimCheck | None:
    """Paper 000's claim that some source classes are strongly biased, from the fine-tuned
    (not from-scratch) models' per-class tests."""
    cand = {k: v for k, v in models.items()
            if "tested_classes" in v and roles.role(v.get("role")) != roles.RIT}
    if not cand:
        return None
    name, v = max(cand.items(), key=lambda kv: kv[1]["strongly_biased"])
    iv = Interval(**v["strong_share_iv"])
    test = v["test"]
    if v["strongly_biased"]:
        return ClaimCheck("000.bias", Verdict.AGREES, f"{v['strongly_biased']} of "
                          f"{v['tested_classes']} source classes of {name} are strongly biased "
                          "beyond the model's base rate (binomial, BH)", iv, test)
    if v["caveat"]:
        return ClaimCheck("000.bias", Verdict.CANNOT_TELL, v["caveat"], None, test)
    return ClaimCheck("000.bias", Verdict.CANNOT_TELL, f"no source class of {name} is biased "
                      f"beyond the base rate at {v['views_min']}+ views per class (absence of "
                      "evidence, not evidence of absence)", iv, test)


def finding(result: AnalysisResult) -> Finding | None:
    """Strongly biased source classes per model (tested against the base rate), with
    intervals over source classes and paired comparisons of the models."""
    s = first_set(result.summary)
    if not s:
        return None
    estimates = []
    for k, v in s.items():
        if v.get("tested_classes"):
            estimates.append((f"share of tested classes strongly biased, {k}",
                              Interval(**v["strong_share_iv"])))
        if "mean_strength_iv" in v:
            estimates.append((f"mean bias strength, {k}", Interval(**v["mean_strength_iv"])))
    clauses = [_clause(k, v) for k, v in s.items()]
    first = next(iter(result.summary)).split("/", 1)[0]
    for key, c in (result.summary.get("paired_strength") or {}).items():
        if key.startswith(f"{first}: "):
            comp = Comparison(c["a"], c["b"], Interval(**c["difference"]), c["p_value"],
                              c["test"])
            clauses.append(comp.words("in mean bias strength"))
    caveat = next((v["caveat"] for v in s.values() if v.get("caveat")), "")
    check = bias_check(s)
    return Finding("Interference bias", f"source classes strongly biased toward one target "
                   f"class: max B >= {STRONG:g} and more than the model's base rate at their "
                   f"number of views (binomial, Benjamini-Hochberg q = {FDR_Q:g})",
                   clauses=tuple(clauses), estimates=tuple(estimates),
                   checks=(check,) if check else (), caveat=caveat,
                   next_step=f"use at least {MIN_VIEWS} views per source class (--views)"
                   if caveat else "", numbers={k: v["strongly_biased"] for k, v in s.items()})


def resolution(res, results: dict) -> list[str]:
    """Where each class's bias B is a fraction over few samples: whether any class can be
    tested at all, what 'strongly biased' needs there, and the Table-2 bins left empty."""
    targets = [k.removeprefix("base rate ") for k in res.tables.get(
        "table", pd.DataFrame()).columns if str(k).startswith("base rate ")]

    def consequence(n: int, pct: list[float]) -> str:
        need = math.ceil(STRONG * n - 1e-9)
        text = (f"; with fewer than {MIN_VIEWS} samples no class is tested, so none is "
                "called strongly biased" if n < MIN_VIEWS else
                "; 'strongly biased' means a one-sided binomial test of the class's "
                "largest target against the base rate, significant after Benjamini-"
                f"Hochberg at q = {FDR_Q:g}, and a largest share max B >= {STRONG:g}: "
                f"at least {need} of the {n} samples in one target class"
                + (" (all of them)" if need == n else ""))
        if len(targets) == 2:
            hit = {sum(p >= e for e in BIAS_EDGES) for p in pct}
            empty = [b for i, b in enumerate(bin_labels(*targets)) if i not in hit]
            if empty:
                text += f"; the Table-2 bins {', '.join(empty)} are empty by construction"
        return text
    return _resolution.per_class_notes(results, "bias B", consequence)


register_analysis("interference_bias", needs=("source_logits",), title="Interference bias of source classes",
                  paper="paper 000, eq. 1, Table 2", section="memory", options=BiasOptions,
                  order=2, run=run, finding=finding, resolution=resolution,
                  drill=(dict(widget="shares", table="per_class", prefix="B[",
                              heading="Where its images land: bias B toward each target class "
                              "(eq. 1)"),),
                  charts={"table": dict(categories="bins", total="classes",
                                        x="bias B of the source class toward the first target "
                                        "class (Table-2 bins)", y="share of source classes (%)",
                                        replaces="bias_hist")})

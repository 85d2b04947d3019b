"""Common and uncommon mistakes of two models (paper 003, section 3.2, Tables 3-6, Figure 8).

Two models classify the same labelled images. Each image falls in one of four cells:

==================  ====================  ====================
                    model 2 correct       model 2 wrong
==================  ====================  ====================
model 1 correct     both correct          ``g1``
model 1 wrong       ``g2``                ``common`` mistakes
==================  ====================  ====================

``g1`` / ``g2`` count the images only the first / only the second model gets right (Appendix
B.2); an *uncommon* mistake is a disagreement where one model is right and the other wrong
(``g1 + g2`` images). ``r1`` and ``r2`` are, for each model, the share of its own mistakes
that the other model does not make:

    r1 = g2 / (g2 + common)        (model 1's mistakes: common + g2)
    r2 = g1 / (g1 + common)

This reading matches the text of B.2 and the numbers of Tables 3-5 (e.g. Table 3, class 1:
832 / (832 + 3597) = 0.1878 = r1). Table 6 appears to list g1 and g2 the other way round
(its r1 equals g1 / (g1 + common)); the formulas above are used throughout.

The paper's CheXpert tables are per class (each class a binary task); for a multi-class
problem the per-class rows here restrict the counts to the images whose *true* label is that
class, and the ``all`` row counts every image. Figure 8 and Appendix B.2 also relate each
model's per-class accuracy to the class size (Pearson R and its p-value).

Raw common-mistake counts cannot be compared across pairs whose accuracies differ: two
models that each err on 20 % of the images share about 4 % of them by chance alone. Every pair
therefore also gets McNemar's test of equal accuracy (paired correctness on the same images),
Cohen's kappa of the two models' error indicators (0: no more shared mistakes than
independent errors at these accuracies would give, 1: the same mistakes) with a bootstrap
interval over target images, and the P-T pair minus RI-T pair difference of that kappa as a
paired bootstrap over the same target images (:func:`compare_pairs`), which tests paper 003's
claim. With one pair of runs each, that verdict is about these runs, not about P-T training.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, fmt, register_analysis
from transferscope.analyses._stats import per_class_rate
from transferscope.analyses._transfer import transfer_inputs
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError
from transferscope.findings import ClaimCheck
from transferscope.stats import (Comparison, Interval, cluster_statistic, mcnemar,
                                 paired_statistic, verdict_of)

__all__ = ["accuracy_vs_class_size", "COLUMNS", "compare_pairs", "error_kappa", "finding",
           "mistake_counts", "mistake_tables", "mistakes_check", "pair_statistics",
           "plot_accuracy_vs_size", "run", "UNIT"]

UNIT = "target image"

COLUMNS = ["class", "n", "acc1", "acc2", "both_correct", "g1", "g2", "common", "uncommon",
           "r1", "r2"]


def _as_preds(x, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 2:
        x = x.argmax(dim=1)
    if x.dim() != 1:
        raise ConfigError(f"{what} must be (N,) class indices or (N, C) logits, got shape "
                          f"{tuple(x.shape)}")
    return x.long()


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def _row(cls, c1: torch.Tensor, c2: torch.Tensor) -> dict:
    n = int(c1.numel())
    g1 = int((c1 & ~c2).sum())
    g2 = int((~c1 & c2).sum())
    common = int((~c1 & ~c2).sum())
    return {"class": cls, "n": n, "acc1": _ratio(int(c1.sum()), n),
            "acc2": _ratio(int(c2.sum()), n), "both_correct": int((c1 & c2).sum()),
            "g1": g1, "g2": g2, "common": common, "uncommon": g1 + g2,
            "r1": _ratio(g2, g2 + common), "r2": _ratio(g1, g1 + common)}


def mistake_counts(pred1, pred2, labels, num_classes: int) -> pd.DataFrame:
    """Per-class and overall counts of common / uncommon mistakes of two models.

    Args:
        pred1, pred2: ``(N,)`` predicted classes (or ``(N, C)`` logits) of models 1 and 2.
        labels: ``(N,)`` true classes.
        num_classes: C; every class gets a row (``n = 0`` and NaN rates if absent).

    Returns:
        Columns ``class, n, acc1, acc2, both_correct, g1, g2, common, uncommon, r1, r2``;
        rows for classes ``0..C-1`` then one row with ``class == "all"``.

    Example:
        >>> t = mistake_counts([0, 1, 1, 0], [0, 0, 1, 1], [0, 1, 0, 0], 2)
        >>> t.iloc[-1][["g1", "g2", "common"]].astype(int).tolist()
        [2, 0, 1]
        >>> round(float(t.iloc[-1]["r2"]), 4)   # model 2 wrong on 3 images, 2 uncommon
        0.6667
    """
    p1, p2 = _as_preds(pred1, "pred1"), _as_preds(pred2, "pred2")
    y = _as_preds(labels, "labels")
    if not (p1.shape == p2.shape == y.shape):
        raise ConfigError(f"predictions and labels differ in length: pred1 {len(p1)}, pred2 "
                          f"{len(p2)}, labels {len(y)}; both models must be run on the same "
                          "images in the same order")
    c1, c2 = p1 == y, p2 == y
    rows = [_row(c, c1[y == c], c2[y == c]) for c in range(num_classes)]
    rows.append(_row("all", c1, c2))
    return pd.DataFrame(rows, columns=COLUMNS)


def accuracy_vs_class_size(preds, labels, num_classes: int, class_sizes=None) -> dict:
    """Per-class accuracy, the class sizes and their Pearson R and two-sided p-value.

    ``class_sizes`` (length C, e.g. training-set counts as in Figure 8) defaults to the number
    of evaluated images per class. Classes without evaluated images are left out of R.
    """
    from scipy.stats import pearsonr

    p, y = _as_preds(preds, "preds"), _as_preds(labels, "labels")
    acc = per_class_rate(p == y, y, num_classes).numpy()
    sizes = (np.bincount(y.numpy(), minlength=num_classes) if class_sizes is None
             else np.asarray(class_sizes, float))
    if len(sizes) != num_classes:
        raise ConfigError(f"class_sizes has {len(sizes)} entries but there are {num_classes} "
                          "classes; give one size per class")
    ok = np.isfinite(acc) & np.isfinite(sizes)
    r = pval = math.nan
    if ok.sum() >= 3 and np.std(acc[ok]) > 0 and np.std(sizes[ok]) > 0:
        res = pearsonr(sizes[ok], acc[ok])
        r, pval = float(res[0]), float(res[1])
    return {"accuracy": acc, "sizes": sizes.astype(float), "pearson_r": r, "p_value": pval,
            "classes_used": int(ok.sum()), "overall_accuracy": float((p == y).double().mean())}


def error_kappa(err_a, err_b) -> float:
    """Cohen's kappa of two models' error indicators on the same images: how much more often
    they err on the same images than independent errors at their error rates would give.

    1 when they make exactly the same mistakes, about 0 for independent errors, negative when
    they avoid each other's mistakes; NaN when agreement by chance is total (both models
    always wrong, or both never).

    Examples:
        >>> error_kappa([1, 0, 1, 0], [1, 0, 1, 0])
        1.0
        >>> error_kappa([1, 1, 0, 0], [1, 0, 1, 0])
        0.0
        >>> error_kappa([1, 0], [0, 1])
        -1.0
    """
    a, b = np.asarray(err_a, bool), np.asarray(err_b, bool)
    if a.size == 0:
        return math.nan
    pa, pb = a.mean(), b.mean()
    observed = float((a == b).mean())
    chance = float(pa * pb + (1 - pa) * (1 - pb))
    return math.nan if chance >= 1 else (observed - chance) / (1 - chance)


def pair_statistics(correct_a, correct_b, *, seed: int = 0) -> dict:
    """McNemar, Cohen's kappa of errors (interval over target images), and common mistakes
    against those independent errors would give, for two models on the same images.

    Example:
        >>> s = pair_statistics([1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 0])
        >>> s["kappa"].value, s["mcnemar"].p_value, s["common"], s["expected_common"]
        (1.0, 1.0, 3, 1.5)
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    ea, eb = ~a, ~b
    kappa = cluster_statistic(lambda i: error_kappa(ea[i], eb[i]), a.size, unit=UNIT, seed=seed)
    expected = float(ea.mean() * eb.mean() * a.size) if a.size else math.nan
    common = int((ea & eb).sum())
    return {"kappa": kappa, "mcnemar": mcnemar(a, b), "common": common,
            "expected_common": expected,
            "common_ratio": common / expected if expected else math.nan}


def compare_pairs(correct: Mapping[str, np.ndarray], pt=("P-T #1", "P-T #2"),
                  rit=("RI-T #1", "RI-T #2"), *, seed: int = 0) -> Comparison | None:
    """Kappa of errors of the P-T pair minus that of the RI-T pair, paired over the same
    target images (every resample draws the same images for both pairs); None unless all four
    models are in ``correct`` (model -> ``(N,)`` booleans)."""
    if not all(k in correct for k in (*pt, *rit)):
        return None
    e = {k: ~np.asarray(correct[k], bool) for k in (*pt, *rit)}
    n = len(e[pt[0]])
    return paired_statistic(lambda i: error_kappa(e[pt[0]][i], e[pt[1]][i]),
                            lambda i: error_kappa(e[rit[0]][i], e[rit[1]][i]), n,
                            names=(" & ".join(pt), " & ".join(rit)), unit=UNIT, seed=seed)


def mistakes_check(comp: Comparison | None) -> ClaimCheck | None:
    """Paper 003's claim (P-T pairs share more mistakes than RI-T pairs) from the paired
    difference of kappa; the verdict speaks of these runs only (one pair of each)."""
    if comp is None:
        return None
    verdict, why = verdict_of(comp.difference, ">")
    return ClaimCheck("003.mistakes", verdict,
                      f"{why} (P-T minus RI-T kappa of errors {comp.difference}, p = "
                      f"{comp.p_value:.2g}); about these runs only (one pair of P-T and one of "
                      "RI-T runs; other seeds may differ)",
                      comp.difference, "Cohen's kappa of error indicators, P-T pair minus RI-T "
                      "pair, " + comp.test)


def mistake_tables(named_preds: Mapping[str, tuple], class_sizes: Sequence[float] | None = None,
                   class_names: Sequence[str] | None = None) -> AnalysisResult:
    """Mistake tables for every pair of models and accuracy vs class size for every model.

    Args:
        named_preds: model name (``"P-T #1"``) -> ``(preds, labels)``; preds are ``(N,)``
            classes or ``(N, C)`` logits, all on the same images in the same order.
        class_sizes: one size per class for Figure 8 (default: evaluated images per class).
        class_names: names for the per-class tables.
    """
    if len(named_preds) < 1:
        raise ConfigError("mistakes analysis needs at least one model's predictions")
    preds = {k: _as_preds(v[0], f"predictions of {k!r}") for k, v in named_preds.items()}
    labels = {k: _as_preds(v[1], f"labels of {k!r}") for k, v in named_preds.items()}
    ref_name, ref = next(iter(labels.items()))
    for k, y in labels.items():
        if y.shape != ref.shape or not torch.equal(y, ref):
            raise ConfigError(f"labels of {k!r} differ from those of {ref_name!r}; run every "
                              "model on the same labelled images in the same order")
    num_classes = len(class_names) if class_names else int(
        max(int(ref.max()), *(int(p.max()) for p in preds.values())) + 1)
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]

    per_class, overall, summary = [], [], {"pairs": {}, "models": {}}
    for a, b in itertools.combinations(preds, 2):
        t = mistake_counts(preds[a], preds[b], ref, num_classes)
        t.insert(0, "model 2", b)
        t.insert(0, "model 1", a)
        t["class name"] = [names[c] if c != "all" else "all" for c in t["class"]]
        per_class.append(t[t["class"] != "all"])
        st = pair_statistics((preds[a] == ref).numpy(), (preds[b] == ref).numpy())
        last = t[t["class"] == "all"].copy()
        last["kappa of errors"] = st["kappa"].value
        last["kappa lo"], last["kappa hi"] = st["kappa"].lo, st["kappa"].hi
        last["expected common"] = st["expected_common"]
        last["McNemar p"] = st["mcnemar"].p_value
        overall.append(last)
        summary["pairs"][f"{a} vs {b}"] = {
            **{k: _plain(last.iloc[0][k]) for k in ("g1", "g2", "common", "r1", "r2", "acc1",
                                                    "acc2")},
            "kappa": st["kappa"].to_dict(), "mcnemar": st["mcnemar"].to_dict(),
            "expected_common": st["expected_common"], "common_ratio": st["common_ratio"]}
    comp = compare_pairs({k: (p == ref).numpy() for k, p in preds.items()})
    if comp is not None:
        summary["pt_vs_rit"] = comp.to_dict()
    acc_rows, corr_rows, curves = [], [], {}
    for k, p in preds.items():
        res = accuracy_vs_class_size(p, ref, num_classes, class_sizes)
        curves[k] = res
        for c in range(num_classes):
            acc_rows.append({"model": k, "class": c, "class name": names[c],
                             "class size": res["sizes"][c], "accuracy": res["accuracy"][c]})
        corr_rows.append({"model": k, "overall accuracy": res["overall_accuracy"],
                          "pearson R": res["pearson_r"], "p-value": res["p_value"],
                          "classes": res["classes_used"]})
        summary["models"][k] = {"accuracy": res["overall_accuracy"],
                                "pearson_r": res["pearson_r"], "p_value": res["p_value"]}
    tables = {"class_accuracy": pd.DataFrame(acc_rows),
              "correlation": pd.DataFrame(corr_rows)}
    if overall:
        tables["pairs"] = pd.concat(overall, ignore_index=True).drop(columns=["class"])
        tables["per_class"] = pd.concat(per_class, ignore_index=True)
    result = AnalysisResult("mistakes", summary, tables)
    result.figures["accuracy_vs_class_size"] = plot_accuracy_vs_size(curves)
    result.notes += [
        "g1/g2: images only model 1 / only model 2 classifies correctly; common: both wrong; "
        "r1 = g2/(g2+common) and r2 = g1/(g1+common) are the shares of each model's mistakes "
        "that the other model avoids (paper 003 Appendix B.2).",
        "Per-class rows count the images of that true class.",
        "kappa of errors: Cohen's kappa of the two models' wrong/right indicators (0 = no more "
        "shared mistakes than independent errors at these accuracies); 95 % interval resamples "
        "target images. McNemar p: exact test of equal accuracy on the same images."]
    return result


def _plain(v):
    """A table cell as a JSON number (numpy scalars -> int/float)."""
    return v.item() if hasattr(v, "item") else v


def plot_accuracy_vs_size(curves: Mapping[str, dict]):
    """Figure 8: per-class accuracy against class size, one marker colour per model."""
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(5.5, 3.5))
    for name, res in curves.items():
        r = res["pearson_r"]
        ax.scatter(res["sizes"], res["accuracy"], s=10, alpha=0.7,
                   label=f"{name} (R={r:.3f})" if np.isfinite(r) else name)
    ax.set_xlabel("class size")
    ax.set_ylabel("per-class accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(ctx: AuditContext) -> AnalysisResult:
    """Mistakes of the P-T and RI-T models of ``ctx`` on its target validation data."""
    data = ctx.target_data
    preds = {k: (ctx.predict(m, data).preds, data.targets)
             for k, m in transfer_inputs(ctx).models.items()}
    return mistake_tables(preds, class_names=data.classes)


def _interval(d: dict | None) -> Interval | None:
    return Interval(**d) if isinstance(d, dict) else None


def _pair_clause(name: str, v: dict) -> str:
    acc = f"accuracy {fmt(v['acc1'])} / {fmt(v['acc2'])}"
    kappa = _interval(v.get("kappa"))
    if kappa is None:  # a result saved before kappa was computed
        return f"{name}: {int(v['common'])} common mistakes ({acc})"
    exp = v.get("expected_common")
    mc = v.get("mcnemar") or {}
    p = mc.get("p_value", math.nan)
    acc_words = ("accuracies differ" if p < 0.05 else "no clear accuracy difference")
    return (f"{name}: {int(v['common'])} common mistakes against {exp:.1f} expected from "
            f"independent errors, kappa of errors {kappa} ({acc}; McNemar p = {p:.2g}, "
            f"{acc_words})")


def finding(result: AnalysisResult) -> Finding | None:
    """Shared mistakes per pair (kappa of errors with its interval over target images, McNemar)
    and paper 003's claim from the paired P-T minus RI-T difference of kappa."""
    pairs = result.summary.get("pairs") or {}
    if not pairs:
        return None
    estimates = tuple((f"kappa of errors {k}", iv) for k, v in pairs.items()
                      if (iv := _interval(v.get("kappa"))) is not None)
    checks, clauses, caveat, step = (), [_pair_clause(k, v) for k, v in pairs.items()], "", ""
    comp = result.summary.get("pt_vs_rit")
    if comp:
        c = Comparison(comp["a"], comp["b"], Interval(**comp["difference"]), comp["p_value"],
                       comp["test"])
        estimates += (("kappa of errors, P-T pair minus RI-T pair", c.difference),)
        clauses.append(c.words("in kappa of errors"))
        checks = (mistakes_check(c),)
        caveat = ("one pair of P-T and one of RI-T runs: the comparison is about these runs; "
                  "train more seeds to speak of P-T and RI-T training")
    else:
        step = "train two P-T and two RI-T runs to test paper 003's claim"
    return Finding("Mistakes", "mistakes two models share on the same target images, against "
                   "what independent errors at their accuracies would give (paper 003: P-T pairs "
                   "share more than RI-T pairs)", clauses=tuple(clauses), estimates=estimates,
                   checks=checks, caveat=caveat, next_step=step,
                   numbers={k: v["common"] for k, v in pairs.items()})


register_analysis("mistakes", title="Common and uncommon mistakes", paper="paper 003, section "
                  "3.2, Tables 3-6, Fig. 8", section="what_transferred", order=2, run=run,
                  finding=finding)

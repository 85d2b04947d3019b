"""Choosing the source before fine-tuning: transferability scores of candidate models for a
target (LogME, LEEP, NCE, H-score and its shrinkage form, GBC, k-NN; see
:mod:`transferscope.ranking`) and, when the candidates were fine-tuned, how well each score
ranks them (weighted Kendall tau and Pearson r with intervals over candidates).

Made by the ``ranking`` study kind (``kind = "ranking"``, :mod:`transferscope.studies.ranking`)
and ``transferscope rank``; :func:`ranking_result` builds the result from their tables.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, register_analysis
from transferscope.stats import Interval, too_few

__all__ = ["finding", "MIN_CANDIDATES", "ranking_result", "score_agreement", "SCORE_COLUMNS",
           "target_factors", "ties_all"]

#: score columns shown and compared (higher is better); the names of transferscope.ranking
SCORE_COLUMNS = ("logme", "leep", "nce", "hscore", "hscore_reg", "gbc", "knn")
MIN_CANDIDATES = 5


def ranking_result(table: pd.DataFrame, check: pd.DataFrame | None = None,
                   accuracy: dict | None = None, factors: dict | None = None) -> AnalysisResult:
    """The ``ranking`` result: ``scores`` (a row per candidate, a column per score, the
    fine-tuned accuracy when known), ``check`` (per score: tau_w, r and their intervals);
    ``factors``: the target's paper 002 factors (:func:`target_factors`), shown as context."""
    scores = table.reset_index().rename(columns={"index": "candidate"})
    if accuracy:
        scores["fine-tuned accuracy"] = scores["candidate"].map(accuracy)
    ranked = [c for c in SCORE_COLUMNS if c in table and table[c].notna().any()]
    best = {s: str(table[s].idxmax()) for s in ranked}
    tied = [s for s in ranked if table[s].notna().sum() > 1 and ties_all(table[s])]
    summary = {"candidates": list(map(str, table.index)), "best": best, "tied": tied,
               "errors": {str(k): v for k, v in table.get("error", pd.Series(dtype=str))
                          .items() if isinstance(v, str) and v},
               "skipped": {str(k): v for k, v in table.get("skipped", pd.Series(dtype=str))
                           .items() if isinstance(v, str) and v},
               "agreement": score_agreement(table, [c for c in ranked if c not in tied])}
    tables = {"scores": scores}
    if check is not None and len(check):
        summary["check"] = {r["score"]: {"tau_w": r["tau_interval"], "r": r["r_interval"],
                                         "n": int(r["n"]), "note": r["note"],
                                         "resampled": r.get("resampled", "candidates")}
                            for _, r in check.iterrows()}
        summary["accuracy"] = {str(k): float(v) for k, v in (accuracy or {}).items()}
        tables["check"] = check.drop(columns=["tau_interval", "r_interval"], errors="ignore")
    if factors:
        summary["factors"] = factors
    result = AnalysisResult("ranking", summary, tables)
    if check is not None and len(check) and accuracy:
        result.figures["score_vs_accuracy"] = _scatter(table, accuracy, ranked)
    return result


def target_factors(target, source, *, limit: int | None = 200, seed: int = 0) -> dict:
    """Paper 002's model-free factors of ``target`` (its training split) against a source
    sample: the domain gap (unbiased Gaussian MMD^2 on the 22 colour and texture statistics,
    z-scored with the source's, Sec. 3.2), the domain width (top covariance eigenvalue) and
    the data amount N (all of ``target``), from at most ``limit`` seeded images per set.
    They describe the target, not a candidate: context for the ranking (a far, wide target
    gains less from any ImageNet model)."""
    from transferscope.analyses.domain import domain_statistics

    name = str(getattr(target, "root", "target"))
    stats = domain_statistics({name: target}, source, limit, seed=seed)
    row = stats.summary[name]
    return {"domain_gap": float(row["gap"]), "domain_width": float(row["width"]),
            "N": int(row["N"]), "source": str(getattr(source, "root", "source")),
            "images": int(stats.tables["domains"]["images used"].iloc[0]),
            "source images": int(stats.tables["domains"]["source images used"].iloc[0])}


def ties_all(values: pd.Series, rtol: float = 1e-9) -> bool:
    """Whether a score gives every candidate it scores the same value (to ``rtol`` of its
    size): it cannot rank them, e.g. the plain H-score, which saturates at C - 1 when the
    features outnumber the images.

    >>> ties_all(pd.Series([1.0, 1.00000000000002, 0.9999999999972415]))
    True
    >>> ties_all(pd.Series([17.9, 0.1, float("nan")]))
    False
    """
    v = values.dropna().to_numpy(float)
    return bool(len(v) and np.ptp(v) <= rtol * max(1.0, float(np.abs(v).max())))


def score_agreement(table: pd.DataFrame, scores) -> dict:
    """Kendall tau between every two scores' rankings of the candidates (those both score).

    Example:
        >>> t = pd.DataFrame({"a": [3.0, 2.0, 1.0], "b": [1.0, 2.0, 3.0]})
        >>> score_agreement(t, ["a", "b"])
        {'a vs b': -1.0}
    """
    from scipy.stats import kendalltau

    out = {}
    for i, a in enumerate(scores):
        for b in scores[i + 1:]:
            ok = table[a].notna() & table[b].notna()
            if ok.sum() >= 2:
                tau = kendalltau(table.loc[ok, a], table.loc[ok, b]).statistic
                out[f"{a} vs {b}"] = float(tau) if np.isfinite(tau) else math.nan
    return out


def _scatter(table: pd.DataFrame, accuracy: dict, scores):
    from transferscope.analyses._figures import subplots

    fig, axes = subplots(1, len(scores), figsize=(2.6 * len(scores), 2.6), squeeze=False)
    for ax, s in zip(axes[0], scores):
        names = [c for c in table.index if c in accuracy and np.isfinite(table.loc[c, s])]
        ax.scatter([table.loc[c, s] for c in names], [accuracy[c] for c in names])
        for c in names:
            ax.annotate(str(c), (table.loc[c, s], accuracy[c]), fontsize=6)
        ax.set_xlabel(s)
    axes[0][0].set_ylabel("fine-tuned accuracy")
    fig.tight_layout()
    return fig


def finding(result: AnalysisResult) -> Finding | None:
    """Which candidate each score ranks first, whether the scores agree, and - with fine-tuned
    accuracies - how well each score ranks them (intervals over candidates)."""
    s = result.summary
    if not s.get("best"):
        return None
    n = len(s["candidates"]) - len(s.get("errors", {}))
    firsts: dict[str, list[str]] = {}
    tied = s.get("tied", [])
    for score, cand in s["best"].items():
        if score not in tied:
            firsts.setdefault(cand, []).append(score)
    clauses = [f"{c} ranks first on {', '.join(v)}" for c, v in firsts.items()]
    clauses += [f"{t} gives every candidate the same value, so it cannot rank them (the "
                "H-score saturates when features outnumber images)" if t == "hscore" else
                f"{t} gives every candidate the same value, so it cannot rank them"
                for t in tied]
    agree = [v for v in s.get("agreement", {}).values() if np.isfinite(v)]
    if agree:
        clauses.append(f"the scores' rankings agree with Kendall tau {min(agree):.2f} to "
                       f"{max(agree):.2f} between pairs of scores")
    clauses += [f"{c}: not ranked ({why})" for c, why in s.get("errors", {}).items()]
    f = s.get("factors")
    if f:  # paper 002's model-free factors: context, the same for every candidate
        clauses.append(f"the target lies at domain gap {f['domain_gap']:.3g} from the source "
                       f"sample {f['source']} (width {f['domain_width']:.3g}, N = {f['N']}; "
                       f"paper 002's factors from {f['images']} target and "
                       f"{f['source images']} source images, the same for every candidate)")
    estimates = []
    for score, c in (s.get("check") or {}).items():
        if score in tied:  # its tau and r would rank noise
            continue
        iv, r = Interval(**c["tau_w"]), Interval(**c["r"])
        estimates += [(f"weighted Kendall tau, {score} vs fine-tuned accuracy", iv),
                      (f"Pearson r, {score} vs fine-tuned accuracy", r)]
        clauses.append(f"{score}: tau_w {iv}, r {r}" + (f", {c['note']}" if c.get("note")
                                                         else ""))
    if any(c.get("resampled") == "candidates" for c in (s.get("check") or {}).values()):
        clauses.append("the tau and r intervals resample candidates only: each fine-tuned "
                       "accuracy's own noise over the validation images is not in them "
                       "(fine-tuning here records it)")
    elif s.get("check"):
        clauses.append("the tau and r intervals resample candidates and the validation "
                       "images together, so each accuracy's own noise is in them")
    caveat = too_few(n, MIN_CANDIDATES, "candidates") or ""
    top = (max(firsts.items(), key=lambda kv: len(kv[1]))[0] if firsts
           else next(iter(s["best"].values())))
    step = (f"fine-tune {top} first (most scores rank it first); a study audits the best "
            "candidate with [source] arch = \"rank:OUT\" (docs/ranking.md)"
            + ("" if s.get("check") else "; fine-tune a few candidates (fine_tune = {...}) to "
               "check which score to trust on this target"))
    return Finding("Ranking the source candidates", f"transferability scores of {n} "
                   "candidates for this target, computed before fine-tuning",
                   clauses=tuple(clauses), estimates=tuple(estimates),
                   caveat=caveat + (" for the scores' agreement with fine-tuned accuracy"
                                    if caveat and s.get("check") else ""),
                   next_step=step, numbers={"best": s["best"]})


register_analysis("ranking", title="Choosing the source: candidate models ranked",
                  paper="paper 002 and LogME/LEEP/NCE/H-score/GBC", section="transferability",
                  made_by="the ranking study (kind = \"ranking\") or transferscope rank",
                  finding=finding, order=0)

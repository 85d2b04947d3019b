"""Source-only and lingering features (paper 001, eq. 1-3).

* ``v(c) = |{x in D^t : c in top_k(M^s(x))}|`` - how often source class c shows in the target
  data (eq. 1);
* source-only features ``F = {c : v(c) <= v_lo}`` (eq. 2);
* lingering features ``L = {c in F : mean_{x in D^c} p_c(M^st(x)) > p_lo}`` - source-only
  classes the fine-tuned backbone still recognises through the source head (eq. 3).

How sure L is non-empty: the count |L| with a bootstrap interval that resamples the evaluated
source-only classes (count = share of them in L times their number); paper 001's claim
(``001.lingering``) agrees when that interval excludes 0 for the first fine-tuned (not
from-scratch) model. The interval is over classes only: a class's own mean probability over
few views is itself uncertain, which it does not show.
"""

from __future__ import annotations

import pandas as pd
import torch
from pydantic import Field

from transferscope import roles
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, register_analysis
from transferscope.analyses._stats import per_class_rate
from transferscope.analyses.context import AuditContext
from transferscope.findings import ClaimCheck
from transferscope.stats import Interval, Verdict, cluster_mean, verdict_of

__all__ = ["class_mean_prob", "finding", "lingering", "lingering_check", "lingering_count",
           "LingeringOptions", "remedy_step", "run", "source_only", "source_votes", "UNIT"]

UNIT = "source class"


def lingering_count(linger: torch.Tensor, evaluated: torch.Tensor, seed: int = 0) -> Interval:
    """|L| with a bootstrap interval over the evaluated source-only classes (``evaluated``:
    boolean ``(S,)`` mask of source-only classes with images).

    Example:
        >>> iv = lingering_count(torch.tensor([True, False, False, False]), torch.ones(4, dtype=torch.bool))
        >>> iv.value, iv.unit, iv.n
        (1.0, 'source class', 4)
    """
    vals = linger[evaluated].double().numpy()
    share = cluster_mean(vals, unit=UNIT, seed=seed)
    k = len(vals)
    return Interval(share.value * k, share.lo * k, share.hi * k, UNIT, share.n, share.level,
                    share.method)


def source_votes(source_logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Eq. 1: ``(N, S)`` logits of M^s on target images -> ``(S,)`` counts ``v(c)``.

    Example:
        >>> source_votes(torch.tensor([[3., 2., 1.], [1., 3., 2.]]), k=2).tolist()
        [1, 2, 1]
    """
    top = source_logits.topk(k, dim=1).indices.flatten()
    return torch.bincount(top, minlength=source_logits.shape[1])


def source_only(votes: torch.Tensor, v_lo: int = 0) -> torch.Tensor:
    """Eq. 2: boolean ``(S,)`` mask of classes with ``v(c) <= v_lo``."""
    return votes <= v_lo


def class_mean_prob(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``mean_{x in D^c} p_c(x)`` for every class c: ``(N, S), (N,) -> (S,)``; NaN if no image."""
    own = probs.gather(1, labels.long()[:, None]).squeeze(1)
    return per_class_rate(own, labels, probs.shape[1])


def lingering(mean_prob: torch.Tensor, only: torch.Tensor, p_lo: float) -> torch.Tensor:
    """Eq. 3: boolean ``(S,)`` mask of source-only classes with mean own probability > p_lo."""
    return only & (mean_prob > p_lo) & ~mean_prob.isnan()


def run(ctx: AuditContext, *, k: int, v_lo: int, p_lo: float | None) -> AnalysisResult:
    """Find F and L for every transferred target model; ``p_lo`` defaults to 10x chance."""
    s = ctx.source.num_classes
    p_lo = 10.0 / s if p_lo is None else float(p_lo)
    names = next(iter(ctx.source_data.values())).classes
    table = pd.DataFrame({"class": range(s), "class name": names})
    # v(c) over the fine-tuning data (the training split) when the context has it, as in the
    # paper and as the detector and the distraction composites use it
    votes_data = getattr(ctx, "target_train_data", None)
    votes_data = ctx.target_data if votes_data is None else votes_data
    summary = {"k": k, "v_lo": v_lo, "p_lo": p_lo, "target_images": len(votes_data),
               "source_only": {}, "models": {}}
    only_by_arch = {}
    for arch, source in ctx.sources.items():
        votes = source_votes(ctx.predict(source, votes_data,
                                         desc=f"votes: M^s {arch} on target").logits, k)
        only_by_arch[arch] = source_only(votes, v_lo)
        table[f"v(c) {arch}"] = votes.tolist()
        table[f"source-only {arch}"] = only_by_arch[arch].tolist()
        table[f"mean p_c(M^s {arch})"] = _pooled_mean_prob(ctx, source, f"M^s {arch}").tolist()
        summary["source_only"][arch] = int(only_by_arch[arch].sum())
    for name, model in ctx.transferred().items():
        only = only_by_arch[model.arch]
        mean_p = _pooled_mean_prob(ctx, ctx.m_st(name), f"M^st ({name})")
        linger = lingering(mean_p, only, p_lo)
        table[f"mean p_c(M^st {name})"] = mean_p.tolist()
        table[f"lingering ({name})"] = linger.tolist()
        order = torch.argsort(torch.nan_to_num(mean_p, nan=-1.0) * linger, descending=True)
        entry = ctx.entries.get(name)
        summary["models"][name] = {
            "arch": model.arch, "lingering": int(linger.sum()),
            "evaluated_source_only": int((only & ~mean_p.isnan()).sum()),
            "lingering_iv": lingering_count(linger, only & ~mean_p.isnan()).to_dict(),
            "role": entry.role if entry is not None else roles.OTHER,
            "top": [{"class": int(c), "name": names[c], "mean_p": float(mean_p[c])}
                    for c in order[: min(10, int(linger.sum()))].tolist()]}
    result = AnalysisResult("lingering_features", summary, {"per_class": table})
    split = "validation" if votes_data is ctx.target_data else "training"
    result.notes.append(f"v(c) counts target {split} images ({len(votes_data)}) whose top-{k} "
                        f"M^s predictions include c; p_lo = {p_lo:g}.")
    return result


def _pooled_mean_prob(ctx: AuditContext, model, label: str) -> torch.Tensor:
    """Mean own-class probability over all source-image sets together."""
    probs, labels = [], []
    for set_name, data in ctx.source_data.items():
        pred = ctx.predict(model, data, desc=f"lingering: {label} on {set_name}")
        probs.append(pred.probs)
        labels.append(pred.labels)
    return class_mean_prob(torch.cat(probs), torch.cat(labels))


class LingeringOptions(AnalysisOptions):
    k: int = Field(5, ge=1, description="top-k M^s predictions counted as votes (eq. 1)")
    v_lo: int = Field(0, ge=0, description="a class is source-only with at most this many "
                      "votes (eq. 2)")
    p_lo: float | None = Field(None, ge=0, le=1, description="mean-probability threshold of "
                               "eq. 3 (default: 10 / number of source classes)")


def lingering_check(models: dict) -> ClaimCheck | None:
    """``001.lingering`` for the first fine-tuned (not from-scratch) model: |L| > 0 by its
    interval over source-only classes."""
    fine = [(k, m) for k, m in models.items() if "lingering_iv" in m
            and roles.role(m.get("role")) != roles.RIT]
    if not fine:
        return None
    name, m = fine[0]
    iv = Interval(**m["lingering_iv"])
    if iv.n == 0:
        return ClaimCheck("001.lingering", Verdict.CANNOT_TELL, f"{name}: no source-only class "
                          "has source images to evaluate", iv)
    verdict, why = verdict_of(iv, ">")
    return ClaimCheck("001.lingering", verdict, f"{why}: {name} has {m['lingering']} lingering "
                      f"of {m['evaluated_source_only']} source-only classes, {iv}", iv,
                      "count of L, cluster bootstrap over source-only classes")


def finding(result: AnalysisResult) -> Finding | None:
    """Lingering source-only classes per transferred model, with their class-level
    intervals."""
    s = result.summary
    parts = [f"{k} {m['lingering']} of {m['evaluated_source_only']}"
             + (f" (e.g. {', '.join(t['name'] for t in m['top'][:3])})" if m["top"] else "")
             for k, m in s["models"].items()]
    estimates = tuple((f"lingering classes |L|, {k}", Interval(**m["lingering_iv"]))
                      for k, m in s["models"].items() if "lingering_iv" in m)
    check = lingering_check(s["models"])
    few = [m["evaluated_source_only"] for m in s["models"].values()]
    caveat = ""
    if few and min(few) < 5:
        caveat = (f"too few source-only classes with images to tell ({min(few)}; at least 5 "
                  "needed for an interval over classes)")
    return Finding("Lingering features", f"(p_lo = {s['p_lo']:g}): source-only classes the "
                   "fine-tuned backbone still recognises", clauses=tuple(parts),
                   estimates=estimates, checks=(check,) if check else (), caveat=caveat,
                   next_step=remedy_step(s["models"]),
                   numbers={k: m["lingering"] for k, m in s["models"].items()})


def remedy_step(models: dict) -> str:
    """What to do when lingering memories are found (some model's |L| > 0, its interval
    clear of 0 when there is one): try the remedies; nothing to do otherwise.

    Example:
        >>> remedy_step({"ft": {"lingering": 0}})
        ''
        >>> remedy_step({"ft": {"lingering": 12}}).split(";")[0]
        'lingering memories found (ft: 12 classes): compare the four remedies against plain fine-tuning with `transferscope remedies --target DATA --out remedies`'
    """
    found = {k: m["lingering"] for k, m in models.items() if m.get("lingering", 0) > 0
             and (m.get("lingering_iv") or {}).get("lo", 1) not in (0, 0.0)}
    if not found:
        return ""
    which = ", ".join(f"{k}: {n} classes" for k, n in found.items())
    return (f"lingering memories found ({which}): compare the four remedies against plain "
            "fine-tuning with `transferscope remedies --target DATA --out remedies`; then "
            "check new images with `transferscope guard` before you trust its predictions")


register_analysis("lingering_features", title="Source-only and lingering features",
                  paper="paper 001, eq. 1-3", section="memory", options=LingeringOptions,
                  order=4, run=run, finding=finding)

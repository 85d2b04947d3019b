"""Occlusion of the background (paper 001, Fig. 5).

Hide everything outside the pasted overlay (grey) on the same composites and count how many
of M^t's wrong predictions become right: evidence that the background - the lingering source
feature - caused the mistake. The accuracy gain (occluded minus with background) is a paired
difference on the same composites with its interval over background images; the fine-tuned
models' gain tests claim 001.occlusion.
"""

from __future__ import annotations

import pandas as pd
import torch

from transferscope.analyses import _composite_verdicts as V
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, register_analysis
from transferscope.analyses.composites import CompositeOptions, group_of, plan
from transferscope.analyses.context import AuditContext
from transferscope.stats import cluster_statistic, paired_difference

__all__ = ["finding", "fix_intervals", "gain", "run"]


def fix_intervals(before: torch.Tensor, after: torch.Tensor, seed: int = 0,
                  clusters=None) -> dict:
    """95 % intervals of the number fixed and of the share of mistakes fixed, over
    ``clusters`` (each composite's background image; None: composites).
    ``before``/``after``: ``(N,)`` booleans, correct with/without background.

    Example:
        >>> r = fix_intervals(torch.tensor([False] * 4), torch.tensor([True] * 4))
        >>> r["fixed_ci95"], r["share_fixed_ci95"], r["n"]
        ([4.0, 4.0], [1.0, 1.0], 4)
    """
    b, a = before.numpy().astype(bool), after.numpy().astype(bool)
    if not len(b):
        return {"n": 0}
    fixed = (~b & a).astype(float)
    unit = "composite" if clusters is None else V.UNIT
    clusters = len(b) if clusters is None else clusters

    def share(i):
        wrong = (~b[i]).sum()
        return fixed[i].sum() / wrong if wrong else float("nan")
    n_fixed = cluster_statistic(lambda i: fixed[i].sum(), clusters, unit=unit, seed=seed)
    shared = cluster_statistic(share, clusters, unit=unit, seed=seed)
    return {"fixed_ci95": list(n_fixed.ci), "share_fixed_ci95": list(shared.ci),
            "share_fixed": float(fixed.sum() / (~b).sum()) if (~b).any() else float("nan"),
            "n": int(len(b)), "intervals": {"fixed": n_fixed.to_dict(),
                                            "share fixed": shared.to_dict()}}


def gain(before: dict, after: dict, names, clusters, seed: int = 0) -> dict:
    """Paired difference of correctness, occluded minus with background, on the same
    composites (per composite: the mean over ``names``), clustered by background image.

    Example:
        >>> g = gain({"m": [0, 0, 1, 1]}, {"m": [1, 1, 1, 1]}, ["m"], [0, 1, 2, 3])
        >>> g["difference"]["value"], g["difference"]["unit"]
        (0.5, 'background image')
    """
    label = V.group_label(list(names), "fine-tuned")
    return paired_difference(V.group_mean(after, names), V.group_mean(before, names), clusters,
                             names=(f"{label} occluded", f"{label} with background"),
                             unit=V.UNIT, seed=seed).to_dict()


def run(ctx: AuditContext, **params) -> AnalysisResult:
    """Wrong-to-right counts per model when the background is occluded (same plan as
    :mod:`.composites`, so the composite forward passes come from the cache), the accuracy
    gain per model (:func:`gain`) and, over the fine-tuned models, claim 001.occlusion."""
    seed = int(params.get("seed", 0))
    p = plan(ctx, **params)
    comp, occl = p.composites, p.composites.occluded()
    bg = comp.items[:, 0].numpy()
    kind = pd.Series(group_of(p, ctx.target_classes))
    rows, summary, hits_before, hits_after = [], {}, {}, {}
    for name, model in ctx.targets.items():
        before = ctx.predict(model, comp, desc=f"composites: {name}").preds == comp.targets
        after = ctx.predict(model, occl, desc=f"occluded: {name}").preds == comp.targets
        hits_before[name], hits_after[name] = before.numpy(), after.numpy()
        fixed, broken = (~before & after), (before & ~after)
        for k in ["all", "agrees", "neutral", "against"]:
            sel = torch.tensor((kind == k).to_numpy()) if k != "all" else slice(None)
            wrong = int((~before)[sel].sum())
            rows.append({"model": name, "background": k, "wrong with background": wrong,
                         "fixed by occlusion": int(fixed[sel].sum()),
                         "broken by occlusion": int(broken[sel].sum()),
                         "share of mistakes fixed": float(fixed[sel].sum() / wrong)
                         if wrong else float("nan")})
        summary[name] = {"wrong": int((~before).sum()), "fixed": int(fixed.sum()),
                         "broken": int(broken.sum()),
                         **fix_intervals(before, after, seed, clusters=bg),
                         "gain": gain(hits_before, hits_after, [name], bg, seed)}
    ft, _ = V.model_groups(ctx)
    summary["background_images"] = V.n_units(bg)
    if ft:
        summary["claim"] = {"fine_tuned": ft,
                            "comparison": gain(hits_before, hits_after, ft, bg, seed)}
    result = AnalysisResult("occlusion", summary, {"fixes": pd.DataFrame(rows)})
    result.notes.append("Intervals: 95 % cluster bootstrap over background images; the gain "
                        "compares each model with and without background on the same "
                        "composites (paired).")
    return result


def finding(result: AnalysisResult) -> Finding | None:
    """Wrong answers on composites that hiding the background fixes, the accuracy gain per
    model, and claim 001.occlusion."""
    s = result.summary
    models = {k: v for k, v in s.items() if isinstance(v, dict) and "wrong" in v}
    if not models:
        return None
    clauses, estimates = [], []
    for k, v in models.items():
        iv = V.interval(v.get("intervals", {}).get("fixed"))
        ci = f" [{iv.lo:.0f}, {iv.hi:.0f}]" if iv is not None and iv.finite else ""
        text = f"{k} {v['fixed']}{ci} of {v['wrong']} fixed"
        g = V.comparison(v.get("gain"))
        if g is not None:
            text += f"; {g.words('in accuracy')}"
            estimates.append((f"{k}: accuracy occluded minus with background", g.difference))
        clauses.append(text)
    claim = V.comparison((s.get("claim") or {}).get("comparison"))
    check = V.claim_check("001.occlusion", claim, ">", "correctness on the occluded minus "
                          "the same composites with background, fine-tuned models")
    return Finding(
        "Occlusion", "wrong answers on composites that become right when the background is "
        "hidden, and the accuracy gained (paired on the same composites; 95 % intervals over "
        "background images)", clauses=tuple(clauses), estimates=tuple(estimates),
        checks=(check,) if check else (),
        caveat=V.caveat(s["background_images"]) if "background_images" in s else "",
        numbers={k: {"fixed": v["fixed"], "wrong": v["wrong"]} for k, v in models.items()})


register_analysis("occlusion", title="Occluding the background", paper="paper 001, Fig. 5",
                  section="memory", options=CompositeOptions, order=6, run=run, finding=finding)

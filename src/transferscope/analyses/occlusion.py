"""Occlusion of the background (paper 001, Fig. 5).

Hide everything outside the pasted overlay (grey) on the same composites and count how many
of M^t's wrong predictions become right: evidence that the background - the lingering source
feature - caused the mistake.
"""

from __future__ import annotations

import html

import pandas as pd
import torch

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, register_analysis
from transferscope.analyses.composites import CompositeOptions, group_of, plan
from transferscope.analyses.context import AuditContext


def run(ctx: AuditContext, **params) -> AnalysisResult:
    """Wrong-to-right counts per model when the background is occluded (same plan as
    :mod:`.composites`, so the composite forward passes come from the cache)."""
    p = plan(ctx, **params)
    comp, occl = p.composites, p.composites.occluded()
    kind = pd.Series(group_of(p, ctx.target_classes))
    rows, summary = [], {}
    for name, model in ctx.targets.items():
        before = ctx.predict(model, comp, desc=f"composites: {name}").preds == comp.targets
        after = ctx.predict(model, occl, desc=f"occluded: {name}").preds == comp.targets
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
                         "broken": int(broken.sum())}
    return AnalysisResult("occlusion", summary, {"fixes": pd.DataFrame(rows)})


def finding(result: AnalysisResult) -> Finding | None:
    """Wrong answers on composites that hiding the background fixes."""
    e = html.escape
    s = result.summary
    parts = [f"{e(k)} {v['fixed']} of {v['wrong']}" for k, v in s.items() if v["wrong"]]
    return Finding("<b>Occlusion</b>: wrong answers on composites that become right when the "
                   "background is hidden - " + "; ".join(parts) + ".",
                   {k: {"fixed": v["fixed"], "wrong": v["wrong"]} for k, v in s.items()})


register_analysis("occlusion", title="Occluding the background", paper="paper 001, Fig. 5",
                  section="memory", options=CompositeOptions, order=6, run=run, finding=finding)

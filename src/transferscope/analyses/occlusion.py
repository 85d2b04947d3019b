"""Occlusion of the background (paper 001, Fig. 5).

Hide everything outside the pasted overlay (grey) on the same composites and count how many
of M^t's wrong predictions become right: evidence that the background - the lingering source
feature - caused the mistake.
"""

from __future__ import annotations

import pandas as pd
import torch

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.composites import group_of, plan
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

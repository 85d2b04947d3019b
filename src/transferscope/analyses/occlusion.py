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
from transferscope.analyses._stats import bootstrap_ci
from transferscope.analyses.context import AuditContext


def fix_intervals(before: torch.Tensor, after: torch.Tensor, seed: int = 0) -> dict:
    """95 % bootstrap intervals over composites of the number fixed and of the share of
    mistakes fixed. ``before``/``after``: ``(N,)`` booleans, correct with/without background.

    Example:
        >>> r = fix_intervals(torch.tensor([False] * 4), torch.tensor([True] * 4))
        >>> r["fixed_ci95"], r["share_fixed_ci95"], r["n"]
        ([4.0, 4.0], [1.0, 1.0], 4)
    """
    b, a = before.numpy().astype(bool), after.numpy().astype(bool)
    fixed = (~b & a).astype(float)

    def share(i):
        wrong = (~b[i]).sum()
        return fixed[i].sum() / wrong if wrong else float("nan")
    return {"fixed_ci95": list(bootstrap_ci(lambda i: fixed[i].sum(), len(b), seed=seed)),
            "share_fixed_ci95": list(bootstrap_ci(share, len(b), seed=seed)),
            "share_fixed": float(fixed.sum() / (~b).sum()) if (~b).any() else float("nan"),
            "n": int(len(b))} if len(b) else {"n": 0}


def run(ctx: AuditContext, **params) -> AnalysisResult:
    """Wrong-to-right counts per model when the background is occluded (same plan as
    :mod:`.composites`, so the composite forward passes come from the cache)."""
    seed = int(params.get("seed", 0))
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
                         "broken": int(broken.sum()), **fix_intervals(before, after, seed)}
    return AnalysisResult("occlusion", summary, {"fixes": pd.DataFrame(rows)})


def finding(result: AnalysisResult) -> Finding | None:
    """Wrong answers on composites that hiding the background fixes."""
    from transferscope.analyses._stats import with_ci

    e = html.escape
    s = result.summary
    parts = [f"{e(k)} {with_ci(v['fixed'], v.get('fixed_ci95'), '.0f')} of {v['wrong']}"
             for k, v in s.items() if v["wrong"]]
    return Finding.from_html("<b>Occlusion</b>: wrong answers on composites that become right when the "
                   "background is hidden - " + "; ".join(parts) + ".",
                   {k: {"fixed": v["fixed"], "wrong": v["wrong"]} for k, v in s.items()})


register_analysis("occlusion", title="Occluding the background", paper="paper 001, Fig. 5",
                  section="memory", options=CompositeOptions, order=6, run=run, finding=finding)

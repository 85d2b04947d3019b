"""Shared statistics of the composite analyses (composites, occlusion, distraction).

One background image carries many composites, so every interval here resamples background
images (:data:`UNIT`); two models are compared on the same composites as pairs
(:func:`~transferscope.stats.paired_difference`), and the papers' fine-tuned-vs-scratch
claims compare the per-composite mean over the fine-tuned models with that over the
from-scratch ones (:func:`model_groups`). Summaries hold ``Interval.to_dict()`` /
``Comparison.to_dict()``; :func:`interval` and :func:`comparison` read them back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from transferscope import roles
from transferscope.findings import ClaimCheck
from transferscope.stats import (Comparison, Interval, Verdict, paired_difference, too_few,
                                verdict_of)

__all__ = ["caveat", "claim_check", "comparison", "group_comparison", "group_label", "group_mean",
           "interval", "MIN_BACKGROUNDS", "model_groups", "n_units", "pairwise", "UNIT"]

UNIT = "background image"
MIN_BACKGROUNDS = 10  # fewer background images: a finding says "too few ... to tell"


def model_groups(ctx) -> tuple[list[str], list[str]]:
    """``(fine-tuned, from scratch)`` target models by role: fine-tuned ones (paper 003's P-T)
    also need a source model of their architecture (:meth:`AuditContext.transferred`).
    Models of unknown role (``"other"``) are in neither group."""
    transferred = ctx.transferred()
    ft = [k for k in ctx.with_role(roles.PT, same_arch=False) if k in transferred]
    return ft, ctx.with_role(roles.RIT, same_arch=False)


def group_mean(columns: dict, names: Sequence[str]) -> np.ndarray:
    """Per item, the mean of ``columns[name]`` over ``names`` (NaN when any is NaN).

    >>> group_mean({"a": [1.0, 0.0], "b": [0.0, 0.0]}, ["a", "b"]).tolist()
    [0.5, 0.0]
    """
    return np.mean([np.asarray(columns[n], float) for n in names], axis=0)


def group_label(names: Sequence[str], what: str) -> str:
    """``"ft"`` for one model, ``"mean of 2 fine-tuned models (a, b)"`` for several."""
    return names[0] if len(names) == 1 else f"mean of {len(names)} {what} models " \
        f"({', '.join(names)})"


def group_comparison(a_cols: dict, b_cols: dict, ft: Sequence[str], scratch: Sequence[str],
                     clusters, seed: int = 0) -> dict | None:
    """Paired difference (fine-tuned minus from scratch) of the per-item group means
    (``a_cols`` holds the fine-tuned models' items, ``b_cols`` the scratch ones'), clustered by
    background image; None unless both groups have a model."""
    if not ft or not scratch:
        return None
    c = paired_difference(group_mean(a_cols, ft), group_mean(b_cols, scratch), clusters,
                          names=(group_label(ft, "fine-tuned"),
                                 group_label(scratch, "from-scratch")), unit=UNIT, seed=seed)
    return {"fine_tuned": list(ft), "scratch": list(scratch), "comparison": c.to_dict()}


def pairwise(columns: dict, names: Sequence[str], clusters, seed: int = 0) -> list[dict]:
    """``Comparison.to_dict()`` of every pair of models (each pair once, in order)."""
    return [paired_difference(columns[a], columns[b], clusters, names=(a, b), unit=UNIT,
                              seed=seed).to_dict()
            for i, a in enumerate(names) for b in names[i + 1:]]


def interval(d: dict | None) -> Interval | None:
    return Interval(**d) if isinstance(d, dict) else None


def comparison(d: dict | None) -> Comparison | None:
    if not isinstance(d, dict):
        return None
    return Comparison(d["a"], d["b"], Interval(**d["difference"]), d["p_value"], d["test"])


def claim_check(key: str, cmp: Comparison | None, expect: str, test: str) -> ClaimCheck | None:
    """The verdict on claim ``key`` from a paired comparison's difference interval; "cannot
    tell" with fewer than :data:`MIN_BACKGROUNDS` background images behind it.

    >>> from transferscope.stats import Comparison, Interval
    >>> c = Comparison("ft", "scratch", Interval(0.2, 0.1, 0.3, UNIT, 6), 0.03, "t")
    >>> claim_check("001.distraction", c, ">", "x").verdict.value
    'cannot tell'
    """
    if cmp is None:
        return None
    verdict, why = verdict_of(cmp.difference, expect)
    small = too_few(cmp.difference.n, MIN_BACKGROUNDS, "background images")
    if small and verdict is not Verdict.CANNOT_TELL:
        verdict, why = Verdict.CANNOT_TELL, f"{small}; {why}"
    return ClaimCheck(key, verdict, f"{why} ({cmp.a} minus {cmp.b}: {cmp.difference})",
                      estimate=cmp.difference, test=f"{test}; {cmp.test}, p = {cmp.p_value:.2g}")


def caveat(n_backgrounds: int) -> str:
    return too_few(n_backgrounds, MIN_BACKGROUNDS, "background images") or ""


def n_units(clusters) -> int:
    return int(np.unique(np.asarray(clusters)).size)

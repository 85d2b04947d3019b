"""Grad-CAM distraction on composites (paper 001, eq. 4, Fig. 3a).

``distraction(x, M) = IoU(P80(A_b(x, M, c_t)), P80(A_b(x, M^s, c_s)))``: the Grad-CAM map of
a target model for its predicted target class and that of the source model for the
background's source class, both restricted to the background (outside the pasted box); P80
keeps exactly the top 20 % of each restricted map's pixels by rank (:func:`top_fraction`).
High values mean the target model looks where the source model sees its source class.

Composites follow paper 001 by default: backgrounds are source images of the lingering
classes L with random target overlays (:func:`lingering_composites`); the plan chosen by
eq. 1 bias (:mod:`.composites`) stays available as ``protocol="bias"``.
"""

from __future__ import annotations

import html
from typing import Literal
import math

import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, register_analysis
from transferscope.analyses.composites import CompositeOptions, plan
from transferscope.analyses._stats import ci_fields
from transferscope.analyses._thumbs import cam_gallery
from transferscope.analyses.context import AuditContext
from transferscope.data.composite import CompositeSet
from transferscope.engine.attribution import gradcam
from transferscope.errors import ConfigError


def box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 4)`` boxes ``(x0, y0, x1, y1)`` -> ``(N, size, size)`` True *outside* the box."""
    r = torch.arange(size)
    inside_y = (r[None, :] >= boxes[:, 1:2]) & (r[None, :] < boxes[:, 3:4])
    inside_x = (r[None, :] >= boxes[:, 0:1]) & (r[None, :] < boxes[:, 2:3])
    return ~(inside_y[:, :, None] & inside_x[:, None, :])


def _kept_count(keep: torch.Tensor, fraction: float) -> torch.Tensor:
    """``ceil(fraction * n)`` per map, robust to float rounding (0.2 * 25 is 5, not 6)."""
    n = keep.flatten(1).sum(1).double()
    return torch.ceil(torch.round(n * fraction * 1e9) / 1e9).long()


def top_fraction(maps: torch.Tensor, keep: torch.Tensor, fraction: float = 0.2,
                 tie_seed: int | None = None) -> torch.Tensor:
    """Per map, exactly ``ceil(fraction * n)`` of its ``n`` kept pixels: the highest values.

    Pixels are ranked by value (descending); equal values are ordered by flat pixel index
    (``tie_seed=None``) or by a seeded random permutation per map (``tie_seed`` an int), so
    the result is deterministic either way. A percentile threshold (``>= P80``) is not used:
    when most kept values are 0 (common after Grad-CAM's ReLU) it keeps them all.

    ``maps (N, H, W)``, ``keep (N, H, W)`` bool -> ``(N, H, W)`` bool.

    Example:
        >>> m = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]])
        >>> top_fraction(m, torch.ones(1, 2, 5, dtype=torch.bool), 0.2).int().tolist()
        [[[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]]
    """
    n_maps = maps.shape[0]
    vals = maps.detach().flatten(1).double().masked_fill(~keep.flatten(1), float("-inf"))
    hw = vals.shape[1]
    if tie_seed is None:
        order = torch.arange(hw).expand(n_maps, hw)
    else:
        g = torch.Generator().manual_seed(int(tie_seed))
        order = torch.stack([torch.randperm(hw, generator=g) for _ in range(n_maps)]) \
            if n_maps else torch.zeros(0, hw, dtype=torch.long)
    by_value = torch.sort(vals.gather(1, order), dim=1, descending=True, stable=True).indices
    ranked = order.gather(1, by_value)  # pixel indices, best first
    take = torch.arange(hw)[None, :] < _kept_count(keep, fraction)[:, None]
    out = torch.zeros(n_maps, hw, dtype=torch.bool)
    out.scatter_(1, ranked, take)
    return out.view_as(keep) & keep


def has_signal(maps: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the kept part of each map is not constant (all-zero maps carry no signal).

    ``maps (N, H, W)``, ``keep (N, H, W)`` bool.
    """
    vals = maps.detach().flatten(1).double()
    k = keep.flatten(1)
    hi = vals.masked_fill(~k, float("-inf")).max(1).values
    lo = vals.masked_fill(~k, float("inf")).min(1).values
    return k.any(1) & (hi > lo)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boolean masks, ``(N, H, W) -> (N,)``; 0 when both empty."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def _upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(maps[:, None], size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0]


def distraction(cam_target: torch.Tensor, cam_source: torch.Tensor, boxes: torch.Tensor,
                size: int, fraction: float = 0.2, tie_seed: int = 0) -> torch.Tensor:
    """Eq. 4 for a batch: ``(N, h, w)`` layer-resolution maps -> ``(N,)`` IoU in [0, 1].

    Maps are upsampled (bilinear) to ``size`` first; the top ``fraction`` of each map's
    background pixels is chosen by :func:`top_fraction`, with ties broken by independent
    seeded permutations for the two sides (``tie_seed`` and ``tie_seed + 1``), so tied pixels
    overlap only by chance. NaN where either map has no signal on the background
    (:func:`has_signal`): such a pair has no "top 20 %" to compare and is reported, not scored.
    """
    keep = box_mask(boxes, size)
    t, s = _upsample(cam_target, size), _upsample(cam_source, size)
    out = iou(top_fraction(t, keep, fraction, tie_seed),
              top_fraction(s, keep, fraction, tie_seed + 1))
    return torch.where(has_signal(t, keep) & has_signal(s, keep), out,
                       torch.full_like(out, float("nan")))


def signal_counts(cams: torch.Tensor, boxes: torch.Tensor, size: int) -> int:
    """How many of the ``(N, h, w)`` maps carry no signal on the background."""
    return int((~has_signal(_upsample(cams, size), box_mask(boxes, size))).sum())


def lingering_composites(ctx: AuditContext, name: str | None = None, *, per_class: int = 10,
                         max_classes: int = 20, style: str = "paper001", seed: int = 0,
                         source_set: str | None = None, k: int = 5, v_lo: int = 0,
                         p_lo: float | None = None) -> tuple[CompositeSet | None, dict]:
    """Paper 001's composites: source images of the lingering classes L of model ``name``
    (default: the first transferred model, M^t) with seeded random target overlays.

    About ``per_class`` composites per class (the paper uses ~100; the default 10 keeps
    Grad-CAM affordable on a CPU): every background image of a class in L gets the same
    ``ceil(per_class / images per class)`` random validation images pasted once each. At most
    ``max_classes`` classes of L are used - those M^st recognises best (highest mean p_c).
    L comes from :func:`~transferscope.analyses.interference_detector.build` (v(c) over the training split
    when the context has one). Returns ``(None, info)`` when L is empty or absent from the
    source images.
    """
    from transferscope.analyses.composites import STYLES
    from transferscope.analyses.interference_detector import _source_probs, build
    from transferscope.analyses.lingering_features import class_mean_prob

    transferred = list(ctx.transferred())
    if not transferred:
        return None, {"reason": "no target model has a source model of its architecture"}
    name = name or transferred[0]
    det = build(ctx, name, k=k, v_lo=v_lo, p_lo=p_lo)
    data = ctx.source_data[source_set or next(iter(ctx.source_data))]
    backgrounds = getattr(data, "base", data)
    present = set(backgrounds.targets.tolist())
    mean_p = class_mean_prob(*_source_probs(ctx, det.m_st))
    classes = [c for c in det.classes.tolist() if c in present]
    classes = sorted(classes, key=lambda c: (-float(mean_p[c]), c))[:max_classes]
    info = {"model": name, "lingering_classes": len(det.classes), "classes_used": len(classes),
            "p_lo": det.p_lo, "k": k}
    if not classes:
        info["reason"] = "L is empty" if not len(det.classes) else \
            "no source image of a lingering class"
        return None, info
    bg_ids = [i for i, smp in enumerate(backgrounds.samples) if smp.label in set(classes)]
    per_bg = min(sum(1 for i in bg_ids if backgrounds.samples[i].label == c) for c in classes)
    n_ov = min(len(ctx.target_data), max(1, math.ceil(per_class / per_bg)))
    ov = torch.randperm(len(ctx.target_data), generator=torch.Generator().manual_seed(seed))
    comp = CompositeSet(backgrounds, ctx.target_data, bg_ids, sorted(ov[:n_ov].tolist()),
                        ctx.image_size, STYLES[style], 1, seed)
    return comp, info


def paired_difference(a, b, seed: int = 0) -> dict:
    """Mean of ``a - b`` over composites scored for both models, with its bootstrap 95 %
    interval and n (the pairs share composites, so they are resampled together).

    Example:
        >>> paired_difference([0.5, 0.25, float("nan")], [0.25, 0.0, 0.5])
        {'mean': 0.25, 'mean_ci95': [0.25, 0.25], 'n': 2}
    """
    import numpy as np

    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    return {"mean": float(d.mean()) if d.size else float("nan"), **ci_fields("mean", d, seed=seed)}


def run(ctx: AuditContext, fraction: float = 0.2, protocol: str = "lingering",
        per_class: int = 10, max_classes: int = 20, **params) -> AnalysisResult:
    """Mean distraction per background source class for every target model.

    ``protocol="lingering"`` (default, paper 001): backgrounds from the lingering set L with
    random overlays (:func:`lingering_composites`); ``"bias"``: the composites plan chosen by
    eq. 1 bias (:func:`~transferscope.analyses.composites.plan`, also the fallback when L is
    empty). ``params`` are the shared composite settings (style, seed, ...).
    """
    if protocol not in ("lingering", "bias"):
        raise ConfigError(f"distraction protocol must be 'lingering' or 'bias', got "
                          f"{protocol!r}")
    seed = int(params.get("seed", 0))
    comp, info = None, {}
    if protocol == "lingering":
        comp, info = lingering_composites(
            ctx, per_class=per_class, max_classes=max_classes,
            style=params.get("style", "paper001"), seed=seed,
            source_set=params.get("source_set"))
    used = "lingering" if comp is not None else "bias"
    if comp is None:
        comp = plan(ctx, **params).composites
    cam_kw = dict(image_size=ctx.image_size, batch_size=ctx.batch_size, cache=ctx.cache,
                  device=getattr(ctx, "device", "auto"),
                  progress=ctx.progress)
    src_cam = gradcam(ctx.source, comp, comp.background_labels, **cam_kw)  # main M^s
    frame = pd.DataFrame({"background": comp.background_labels.tolist()})
    src_silent = signal_counts(src_cam, comp.boxes, comp.size)
    summary = {}
    cams = {}
    for name, model in ctx.targets.items():
        cams[name] = cam = gradcam(model, comp, "pred", **cam_kw)
        frame[name] = distraction(cam, src_cam, comp.boxes, comp.size, fraction).numpy()
        scored = frame[name].dropna().to_numpy()
        summary[name] = {"mean": float(scored.mean()) if len(scored) else float("nan"),
                         **ci_fields("mean", scored, seed=seed), "composites": len(comp),
                         "no_signal_target_maps": signal_counts(cam, comp.boxes, comp.size),
                         "no_signal_source_maps": src_silent,
                         "not_scored": int(len(comp) - len(scored))}
    names = comp.backgrounds.classes
    per_class = frame.groupby("background").mean().reset_index()  # means of scored pairs
    scored_n = frame.groupby("background").count().reset_index()
    for name in ctx.targets:
        per_class[f"scored {name}"] = scored_n[name].to_numpy()
    per_class.insert(1, "background name", [names[c] for c in per_class["background"]])
    for name in ctx.targets:
        summary[name]["classes_more_distracted_than"] = {
            other: int((per_class[name] > per_class[other]).sum())
            for other in ctx.targets if other != name}
        summary[name]["minus"] = {other: paired_difference(frame[name], frame[other], seed)
                                  for other in ctx.targets if other != name}
    for name in ctx.targets:
        summary[name]["protocol"] = used
    result = AnalysisResult("distraction", summary, {"per_class": per_class})
    result.notes.append(
        f"Backgrounds: source images of {info['classes_used']} lingering classes of "
        f"{info['model']} (L has {info['lingering_classes']}; p_lo {info['p_lo']:g}, k "
        f"{info['k']}) with random target overlays, as in paper 001." if used == "lingering"
        else "Backgrounds chosen by eq. 1 bias (composites plan)" +
        (f" because the lingering protocol could not run: {info['reason']}."
         if info.get("reason") else "."))
    result.figures["scatter"] = _scatter(per_class, list(ctx.targets))
    gallery, result.images = cam_gallery(comp, src_cam, cams, {n: frame[n].to_numpy()
                                                               for n in cams}, ctx.target_classes)
    result.tables["gallery"] = pd.DataFrame(gallery)  # report drill-down: maps side by side
    result.notes.append(f"Top {fraction:.0%} of background pixels of each Grad-CAM map "
                        "(exactly ceil(20 %) by rank; tied values broken by seeded permutations, "
                        "independently per side); "
                        f"{len(comp)} composites over {per_class.shape[0]} source classes.")
    result.notes.append("Pairs where either map is constant on the background (no signal, e.g. "
                        "all zero after Grad-CAM's ReLU) are not scored; their counts are in "
                        "the summary. Intervals: 95 % percentile bootstrap over composites.")
    return result


def _scatter(per_class: pd.DataFrame, models: list[str]):
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(4, 4))
    if len(models) >= 2:
        a, b = models[0], models[1]
        ax.scatter(per_class[b], per_class[a], s=14)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        ax.set_xlabel(f"distraction of {b}")
        ax.set_ylabel(f"distraction of {a}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return fig


class DistractionOptions(CompositeOptions):
    fraction: float = Field(0.2, gt=0, le=1, description="share of the Grad-CAM map kept as "
                            "its top region (eq. 4)")
    protocol: Literal["lingering", "bias"] = Field(
        "lingering", description="backgrounds from the lingering set L with random overlays "
        "(paper 001) or the composites plan chosen by eq. 1 bias")
    per_class: int = Field(10, ge=1, description="composites per lingering class (paper 001: "
                           "about 100; fewer keep Grad-CAM affordable on a CPU)")
    max_classes: int = Field(20, ge=1, description="at most this many classes of L (those M^st "
                             "recognises best)")


def finding(result: AnalysisResult) -> Finding | None:
    """Mean distraction of every target model."""
    from transferscope.analyses._stats import compare_cis, with_ci

    e = html.escape
    s = {k: v for k, v in result.summary.items() if isinstance(v, dict) and "mean" in v}
    parts = [f"{e(k)} {with_ci(v['mean'], v.get('mean_ci95'))}" for k, v in s.items()]
    verdict = compare_cis({k: (v["mean"], v.get("mean_ci95")) for k, v in s.items()})
    return Finding.from_html("<b>Grad-CAM distraction</b> (mean IoU with the source model's map on the "
                   "background, 95 % interval over composites): " + "; ".join(parts) + "."
                   + (f" Highest vs lowest: {e(verdict)}." if verdict else ""),
                   {k: v["mean"] for k, v in s.items()})


register_analysis("distraction", title="Grad-CAM distraction", paper="paper 001, eq. 4, Fig. 3a",
                  section="memory", options=DistractionOptions, order=7, run=run, finding=finding)

"""Grad-CAM distraction on composites (paper 001, eq. 4, Fig. 3a).

``distraction(x, M) = IoU(P80(A_b(x, M, c_t)), P80(A_b(x, M^s, c_s)))``: the Grad-CAM map of
a target model for its predicted target class and that of the source model for the
background's source class, both restricted to the background (outside the pasted box); P80
keeps exactly the top 20 % of each restricted map's pixels by rank (:func:`top_fraction`).
High values mean the target model looks where the source model sees its source class.
Equal values are ordered the same way for both maps (identical maps score 1); a target map
without signal on the background scores 0, a source map without it leaves the composite
unscored (counted). Intervals resample background images; models are compared as pairs on
the same composites, and fine-tuned vs from-scratch tests claim 001.distraction.

Composites follow paper 001 by default: backgrounds are source images of the lingering
classes L with random target overlays (:func:`lingering_composites`); the plan chosen by
eq. 1 bias (:mod:`.composites`) stays available as ``protocol="bias"``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field

from transferscope.analyses import _composite_verdicts as V
from transferscope.analyses import _resolution
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, register_analysis
from transferscope.analyses._thumbs import cam_gallery
from transferscope.analyses.composites import CompositeOptions, plan
from transferscope.analyses.context import AuditContext
from transferscope.data.composite import CompositeSet
from transferscope.engine.attribution import gradcam
from transferscope.errors import ConfigError
from transferscope.stats import cluster_mean

__all__ = ["box_mask", "distraction", "DistractionOptions", "finding", "has_signal", "iou",
           "lingering_composites", "run", "signal_counts", "summarise", "top_fraction"]


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


def _distance_to_mass(maps: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)``: per pixel, the Euclidean distance to the nearest kept pixel above the
    map's kept minimum (0 everywhere for a map without such a pixel)."""
    from scipy.ndimage import distance_transform_edt

    vals = maps.detach().double()
    lo = vals.masked_fill(~keep, float("inf")).flatten(1).min(1).values
    hot = (keep & (vals > lo[:, None, None])).numpy()
    out = torch.zeros(vals.shape, dtype=torch.float64)
    for i in range(len(hot)):
        if hot[i].any():
            out[i] = torch.from_numpy(distance_transform_edt(~hot[i]))
    return out


def top_fraction(maps: torch.Tensor, keep: torch.Tensor, fraction: float = 0.2,
                 tie_seed: int | None = None, near: bool = False) -> torch.Tensor:
    """Per map, exactly ``ceil(fraction * n)`` of its ``n`` kept pixels: the highest values.

    Pixels are ranked by value (descending); equal values are ordered, with ``near``, first by
    their distance to the map's own mass (kept pixels above its minimum, nearest first), then
    by flat pixel index (``tie_seed=None``) or by a seeded random permutation per map
    (``tie_seed`` an int: map ``i`` gets the same permutation in every call), so the result is
    deterministic and identical maps select identical pixels. A percentile threshold
    (``>= P80``) is not used: when most kept values are 0 (common after Grad-CAM's ReLU) it
    keeps them all.

    ``maps (N, H, W)``, ``keep (N, H, W)`` bool -> ``(N, H, W)`` bool.

    Example:
        >>> m = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]])
        >>> top_fraction(m, torch.ones(1, 2, 5, dtype=torch.bool), 0.2).int().tolist()
        [[[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]]
        >>> top_fraction(m, torch.ones(1, 2, 5, dtype=torch.bool), 0.2, near=True).int().tolist()
        [[[0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]]
    """
    n_maps = maps.shape[0]
    vals = maps.detach().flatten(1).double().masked_fill(~keep.flatten(1), float("-inf"))
    hw = vals.shape[1]
    if tie_seed is None:
        ranked = torch.arange(hw).expand(n_maps, hw)
    else:
        g = torch.Generator().manual_seed(int(tie_seed))
        ranked = torch.stack([torch.randperm(hw, generator=g) for _ in range(n_maps)]) \
            if n_maps else torch.zeros(0, hw, dtype=torch.long)
    keys = [vals.neg()]  # stable sorts, last key first: value, then distance, then order
    if near and n_maps:
        keys.insert(0, _distance_to_mass(maps, keep).flatten(1))
    for key in keys:
        ranked = ranked.gather(1, torch.sort(key.gather(1, ranked), dim=1, stable=True).indices)
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
    background pixels is chosen by :func:`top_fraction` with one tie rule for both sides
    (nearest the map's own mass, then one shared seeded permutation), so identical maps
    score 1 and tied pixels of unrelated maps do not overlap by construction.

    A target map without signal on the background (:func:`has_signal`, e.g. all of its mass
    on the overlay) scores 0: the model is not distracted. A source map without signal leaves
    nothing to compare: NaN (not scored; count these).

    Example:
        >>> a = torch.zeros(1, 8, 8); a[0, 1, 1] = 1.0
        >>> box = torch.tensor([[4, 4, 8, 8]])
        >>> distraction(a, a.clone(), box, 8).item(), distraction(a * 0, a, box, 8).item()
        (1.0, 0.0)
    """
    keep = box_mask(boxes, size)
    t, s = _upsample(cam_target, size), _upsample(cam_source, size)
    out = iou(top_fraction(t, keep, fraction, tie_seed, near=True),
              top_fraction(s, keep, fraction, tie_seed, near=True))
    out = torch.where(has_signal(t, keep), out, torch.zeros_like(out))
    return torch.where(has_signal(s, keep), out, torch.full_like(out, float("nan")))


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
    Grad-CAM affordable on a CPU): every background image of a class in L carries
    ``ceil(per_class / images per class)`` composites, each with its own random target image
    (paper 001: "a random image from D^t on top of each instance"; drawn without replacement
    until every target image is used once, then again). At most
    ``max_classes`` classes of L are used - those M^st recognises best (highest mean p_c).
    L comes from :func:`~transferscope.analyses.interference_detector.build` (v(c) over the training split
    when the context has one). Returns ``(None, info)`` when L is empty or absent from the
    source images.
    """
    from transferscope.analyses.composites import STYLES
    from transferscope.analyses.interference_detector import build, source_probs
    from transferscope.analyses.lingering_features import class_mean_prob

    transferred = list(ctx.transferred())
    if not transferred:
        return None, {"reason": "no target model has a source model of its architecture"}
    name = name or transferred[0]
    det = build(ctx, name, k=k, v_lo=v_lo, p_lo=p_lo)
    data = ctx.source_data[source_set or next(iter(ctx.source_data))]
    backgrounds = getattr(data, "base", data)
    present = set(backgrounds.targets.tolist())
    mean_p = class_mean_prob(*source_probs(ctx, det.m_st))
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
    g, n_t = torch.Generator().manual_seed(seed), len(ctx.target_data)
    draws = torch.cat([torch.randperm(n_t, generator=g)
                       for _ in range(math.ceil(len(bg_ids) * n_ov / n_t))]).tolist()
    pairs = [(b, draws[i * n_ov + j]) for i, b in enumerate(bg_ids) for j in range(n_ov)]
    comp = CompositeSet.paired(backgrounds, ctx.target_data, pairs, ctx.image_size,
                               STYLES[style], 1, seed)
    return comp, info


def summarise(scores: dict, clusters, *, fine_tuned=(), scratch=(), target_silent=None,
              seed: int = 0) -> dict:
    """Per model: mean distraction over scored composites with its interval over background
    images (``clusters``: each composite's background image), the paired difference to every
    other model on the same composites, and the fine-tuned-vs-scratch comparison of claim
    001.distraction (per composite, mean over the fine-tuned models minus mean over the
    from-scratch ones) when both groups are present. ``scores``: model -> ``(N,)`` eq. 4
    values, NaN where the source map has no signal (the same composites for every model).

    Example:
        >>> s = summarise({"a": [1.0, 0.0, float("nan")], "b": [0.5, 0.0, float("nan")]},
        ...               [0, 1, 2], fine_tuned=["a"], scratch=["b"])
        >>> s["a"]["mean"], s["a"]["scored"], s["not_scored"], s["a"]["interval"]["n"]
        (0.5, 2, 1, 2)
        >>> s["claim"]["comparison"]["difference"]["value"]
        0.25
    """
    names = list(scores)
    cols = {n: np.asarray(scores[n], float) for n in names}
    clusters = np.asarray(clusters)
    n_items = len(clusters)
    out: dict = {"unit": V.UNIT, "composites": n_items,
                 "background_images": V.n_units(clusters)}
    for n in names:
        iv = cluster_mean(cols[n], clusters, unit=V.UNIT, seed=seed)
        out[n] = {"mean": iv.value, "interval": iv.to_dict(), "composites": n_items,
                  "scored": int(np.isfinite(cols[n]).sum()),
                  "no_signal_target_maps": int((target_silent or {}).get(n, 0))}
    out["not_scored"] = int(n_items - max((out[n]["scored"] for n in names), default=0))
    out["comparisons"] = V.pairwise(cols, names, clusters, seed)
    claim = V.group_comparison(cols, cols, fine_tuned, scratch, clusters, seed)
    if claim:
        out["claim"] = claim
    return out


def run(ctx: AuditContext, *, fraction: float, protocol: str, per_class: int, max_classes: int,
        **params) -> AnalysisResult:
    """Mean distraction of every target model with intervals over background images
    (:func:`summarise`), and per background source class.

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
    run = ctx.settings
    cam_kw = dict(image_size=ctx.image_size, batch_size=run.batch_size, cache=run.cache,
                  device=run.device, progress=run.progress)
    src_cam = gradcam(ctx.source, comp, comp.background_labels, **cam_kw)  # main M^s
    frame = pd.DataFrame({"background": comp.background_labels.tolist()})
    cams, silent = {}, {}
    for name, model in ctx.targets.items():
        cams[name] = cam = gradcam(model, comp, "pred", **cam_kw)
        frame[name] = distraction(cam, src_cam, comp.boxes, comp.size, fraction).numpy()
        silent[name] = signal_counts(cam, comp.boxes, comp.size)
    ft, scratch = V.model_groups(ctx)
    summary = summarise({n: frame[n] for n in ctx.targets}, comp.items[:, 0].numpy(),
                        fine_tuned=ft, scratch=scratch, target_silent=silent, seed=seed)
    summary["protocol"] = used
    names = comp.backgrounds.classes
    per_class = frame.groupby("background").mean().reset_index()  # means of scored pairs
    scored_n = frame.groupby("background").count().reset_index()
    for name in ctx.targets:
        per_class[f"scored {name}"] = scored_n[name].to_numpy()
    per_class.insert(1, "background name", [names[c] for c in per_class["background"]])
    for name in ctx.targets:
        summary[name]["protocol"] = used
        summary[name]["classes_more_distracted_than"] = {
            other: int((per_class[name] > per_class[other]).sum())
            for other in ctx.targets if other != name}
    result = AnalysisResult("distraction", summary, {"per_class": per_class})
    result.notes.append(
        f"Backgrounds: source images of {info['classes_used']} lingering classes of "
        f"{info['model']} (L has {info['lingering_classes']}; p_lo {info['p_lo']:g}, k "
        f"{info['k']}), each composite with its own random target overlay, as in paper 001."
        if used == "lingering"
        else "Backgrounds chosen by eq. 1 bias (composites plan)" +
        (f" because the lingering protocol could not run: {info['reason']}."
         if info.get("reason") else "."))
    result.figures["scatter"] = _scatter(per_class, list(ctx.targets))
    gallery, result.images = cam_gallery(comp, src_cam, cams, {n: frame[n].to_numpy()
                                                               for n in cams}, ctx.target_classes)
    result.tables["gallery"] = pd.DataFrame(gallery)  # report drill-down: maps side by side
    result.notes.append(f"Top {fraction:.0%} of background pixels of each Grad-CAM map "
                        "(exactly ceil(20 %) by rank; equal values: nearest the map's own mass "
                        "first, then one seeded order shared by both maps); "
                        f"{len(comp)} composites over {per_class.shape[0]} source classes.")
    result.notes.append("A target map without signal on the background scores 0 (not "
                        "distracted); pairs whose source map has none are not scored "
                        f"({summary['not_scored']} of {len(comp)}). Intervals: 95 % cluster "
                        "bootstrap over background images; models compared as pairs on the "
                        "same composites.")
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
    """Mean distraction of every target model, the paired differences, claim 001.distraction."""
    s = result.summary
    models = {k: v for k, v in s.items() if isinstance(v, dict) and "mean" in v}
    if not models:
        return None
    clauses, estimates = [], []
    for k, v in models.items():
        iv = V.interval(v.get("interval"))
        text = f"{k} {iv}" if iv else f"{k} {v['mean']:.3f}"
        if v.get("no_signal_target_maps"):
            text += (f", {v['no_signal_target_maps']} of {v.get('composites', '?')} maps "
                     "without signal on the background (scored 0)")
        clauses.append(text)
        if iv:
            estimates.append((k, iv))
    for d in s.get("comparisons", []):
        c = V.comparison(d)
        clauses.append(c.words("in distraction"))
        estimates.append((f"{c.a} minus {c.b}", c.difference))
    if s.get("not_scored"):
        clauses.append(f"{s['not_scored']} of {s.get('composites', '?')} composites not "
                       "scored: the source model's map has no signal on their background")
    claim = s.get("claim") or {}
    check = V.claim_check("001.distraction", V.comparison(claim.get("comparison")), ">",
                          "distraction of the fine-tuned minus the from-scratch models on the "
                          "same composites")
    return Finding(
        "Grad-CAM distraction",
        "mean IoU of the top 20 % of each model's Grad-CAM map with the source model's, on "
        "the background (paper 001, eq. 4; 95 % intervals over background images)",
        clauses=tuple(clauses), estimates=tuple(estimates),
        checks=(check,) if check else (),
        caveat=V.caveat(s["background_images"]) if "background_images" in s else "",
        next_step="" if check else "train a model from scratch on the same target data to "
        "test paper 001's claim that fine-tuned models are more distracted",
        numbers={k: v["mean"] for k, v in models.items()})


_MAPS_NOTE = "Distraction: IoU of the top 20% background pixels of the two maps (paper 001, eq. 4)."
register_analysis("distraction", title="Grad-CAM distraction", paper="paper 001, eq. 4, Fig. 3a",
                  section="memory", options=DistractionOptions, order=7, run=run, finding=finding,
                  resolution=lambda res, results: _resolution.composite_notes(results, False),
                  gallery=dict(widget="maps", by="background", truth="pasted class",
                               label="composite, pasted", score="distraction",
                               source="source model (M^s), its map of the background's class",
                               title="Grad-CAM maps side by side",
                               note="one composite per background class; " + _MAPS_NOTE),
                  drill=(dict(widget="gallery", heading="Grad-CAM: source model (background "
                              "class) vs each target model (its prediction)", note=_MAPS_NOTE),))

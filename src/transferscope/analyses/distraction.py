"""Grad-CAM distraction on composites (paper 001, eq. 4, Fig. 3a).

``distraction(x, M) = IoU(P80(A_b(x, M, c_t)), P80(A_b(x, M^s, c_s)))``: the Grad-CAM map of
a target model for its predicted target class and that of the source model for the
background's source class, both restricted to the background (outside the pasted box); P80
keeps the pixels at or above the 80th percentile of each restricted map (the top 20%). High
values mean the target model looks where the source model sees its source class.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._thumbs import cam_gallery
from transferscope.analyses.composites import plan
from transferscope.analyses.context import AuditContext
from transferscope.engine.attribution import gradcam


def box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 4)`` boxes ``(x0, y0, x1, y1)`` -> ``(N, size, size)`` True *outside* the box."""
    r = torch.arange(size)
    inside_y = (r[None, :] >= boxes[:, 1:2]) & (r[None, :] < boxes[:, 3:4])
    inside_x = (r[None, :] >= boxes[:, 0:1]) & (r[None, :] < boxes[:, 2:3])
    return ~(inside_y[:, :, None] & inside_x[:, None, :])


def top_fraction(maps: torch.Tensor, keep: torch.Tensor, fraction: float = 0.2) -> torch.Tensor:
    """Per map, the kept pixels at or above the ``1 - fraction`` quantile of the kept values.

    ``maps (N, H, W)``, ``keep (N, H, W)`` bool -> ``(N, H, W)`` bool.
    """
    out = torch.zeros_like(keep)
    for i in range(len(maps)):
        vals = maps[i][keep[i]]
        if vals.numel() == 0:
            continue
        thr = torch.quantile(vals.double(), 1 - fraction).to(maps.dtype)
        out[i] = keep[i] & (maps[i] >= thr)
    return out


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boolean masks, ``(N, H, W) -> (N,)``; 0 when both empty."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def distraction(cam_target: torch.Tensor, cam_source: torch.Tensor, boxes: torch.Tensor,
                size: int, fraction: float = 0.2) -> torch.Tensor:
    """Eq. 4 for a batch: layer-resolution maps are upsampled (bilinear) to ``size`` first."""
    up = lambda m: F.interpolate(m[:, None], size=(size, size), mode="bilinear",
                                 align_corners=False)[:, 0]
    keep = box_mask(boxes, size)
    return iou(top_fraction(up(cam_target), keep, fraction),
               top_fraction(up(cam_source), keep, fraction))


def run(ctx: AuditContext, fraction: float = 0.2, **params) -> AnalysisResult:
    """Mean distraction per background source class for every target model."""
    p = plan(ctx, **params)
    comp = p.composites
    cam_kw = dict(image_size=ctx.image_size, batch_size=ctx.batch_size, cache=ctx.cache,
                  progress=ctx.progress)
    src_cam = gradcam(ctx.source, comp, comp.background_labels, **cam_kw)  # main M^s
    frame = pd.DataFrame({"background": comp.background_labels.tolist()})
    cams = {}
    for name, model in ctx.targets.items():
        cams[name] = cam = gradcam(model, comp, "pred", **cam_kw)
        frame[name] = distraction(cam, src_cam, comp.boxes, comp.size, fraction).numpy()
    names = comp.backgrounds.classes
    per_class = frame.groupby("background").mean().reset_index()
    per_class.insert(1, "background name", [names[c] for c in per_class["background"]])
    summary = {name: {"mean": float(frame[name].mean()),
                      "classes_more_distracted_than": {
                          other: int((per_class[name] > per_class[other]).sum())
                          for other in ctx.targets if other != name}}
               for name in ctx.targets}
    result = AnalysisResult("distraction", summary, {"per_class": per_class})
    result.figures["scatter"] = _scatter(per_class, list(ctx.targets))
    gallery, result.images = cam_gallery(comp, src_cam, cams, {n: frame[n].to_numpy()
                                                               for n in cams}, ctx.target_classes)
    result.tables["gallery"] = pd.DataFrame(gallery)  # report drill-down: maps side by side
    result.notes.append(f"Top {fraction:.0%} of background pixels of each Grad-CAM map; "
                        f"{len(comp)} composites over {per_class.shape[0]} source classes.")
    return result


def _scatter(per_class: pd.DataFrame, models: list[str]):
    from transferscope.analyses._plots import subplots

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

"""Composite images and the accuracy they cost (paper 000, section 2.3, Fig. 2; paper 001, 4).

Backgrounds are chosen automatically from M^t's bias (eq. 1 of paper 000): per target class
the source classes most strongly biased toward it, plus neutral classes. Overlays are the
target images every model recognises most confidently. Each target model is scored on the
composites per background group; the paper's finding is that fine-tuned models lose most when
the background is biased *against* the pasted class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from pydantic import Field

from transferscope.analyses import _composite_verdicts as V
from transferscope.analyses import _resolution
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, register_analysis
from transferscope.analyses._thumbs import composite_gallery
from transferscope.analyses.context import AuditContext
from transferscope.analyses.interference_bias import bias_matrix, bias_strength
from transferscope.data.composite import PAPER000_SIDE, PAPER001_SIDE, CompositeSet
from transferscope.errors import ConfigError
from transferscope.stats import cluster_mean, cluster_statistic, plural

STYLES = {"paper000": PAPER000_SIDE, "paper001": PAPER001_SIDE}


@dataclass
class CompositePlan:
    """What was pasted on what: the composite set and each background class's group."""

    composites: CompositeSet
    groups: dict[int, str]  # source class -> "toward <target>" or "neutral"
    bias: torch.Tensor  # (S, T) bias of the reference model
    reference: str


def choose_backgrounds(mat: torch.Tensor, present: torch.Tensor, n_biased: int = 3,
                       n_neutral: int = 4) -> dict[int, str]:
    """Source classes per group: the ``n_biased`` most biased toward each target class (bias
    >= 0.8 when available, else the highest) and the ``n_neutral`` most even ones."""
    t = mat.shape[1]
    sub = mat[present]
    groups: dict[int, str] = {}
    for j in range(t):
        order = torch.argsort(sub[:, j], descending=True)
        picked = [int(present[i]) for i in order.tolist() if int(present[i]) not in groups]
        for c in picked[:n_biased]:
            groups[c] = f"toward {j}"
    strength = bias_strength(sub)
    for i in torch.argsort(strength).tolist():
        c = int(present[i])
        if c not in groups and sum(g == "neutral" for g in groups.values()) < n_neutral:
            groups[c] = "neutral"
    return groups


def plan(ctx: AuditContext, style: str = "paper001", n_biased: int = 3, n_neutral: int = 4,
         overlays_per_class: int = 10, repeats: int = 2, seed: int = 0,
         source_set: str | None = None, reference: str | list[str] | None = None
         ) -> CompositePlan:
    """Deterministic composite set for the audit (shared by composites and occlusion).

    Backgrounds are chosen by the bias (eq. 1) of ``reference``: one target model's name, or
    a list of names whose bias matrices are averaged (default: the first fine-tuned model).
    """
    if style not in STYLES:
        raise ConfigError(f"composite style must be one of {list(STYLES)}, got {style!r}")
    transferred = list(ctx.transferred()) or list(ctx.targets)
    refs = [transferred[0]] if reference is None else \
        [reference] if isinstance(reference, str) else list(reference)
    unknown = [r for r in refs if r not in ctx.targets]
    if unknown or not refs:
        raise ConfigError(f"composites reference {unknown or refs} is not a target model; "
                          f"choose from {list(ctx.targets)}")
    name = source_set or next(iter(ctx.source_data))
    data = ctx.source_data[name]
    backgrounds = getattr(data, "base", data)  # paste on the original images, not the views
    mats = []
    for r in refs:
        pred = ctx.predict(ctx.targets[r], data)
        mats.append(bias_matrix(pred.preds, pred.labels, ctx.source.num_classes,
                                len(ctx.target_classes)))
    mat = torch.stack(mats).mean(0)  # NaN rows (classes absent from data) stay NaN
    groups = choose_backgrounds(mat, torch.unique(data.targets), n_biased, n_neutral)
    bg_ids = [i for i, s in enumerate(backgrounds.samples) if s.label in groups]
    conf = torch.stack([ctx.predict(m, ctx.target_data).probs[
        torch.arange(len(ctx.target_data)), ctx.target_data.targets] for m in ctx.targets.values()
    ]).min(0).values
    labels = ctx.target_data.targets
    ov_ids = []
    for j in range(len(ctx.target_classes)):
        idx = torch.nonzero(labels == j).flatten()
        ov_ids += idx[torch.argsort(conf[idx], descending=True)[:overlays_per_class]].tolist()
    comp = CompositeSet(backgrounds, ctx.target_data, bg_ids, sorted(ov_ids), ctx.image_size,
                        STYLES[style], repeats, seed)
    return CompositePlan(comp, groups, mat, refs[0] if len(refs) == 1 else
                         "mean of " + ", ".join(refs))


def group_of(plan_: CompositePlan, classes: list[str]) -> list[str]:
    """Per composite: 'neutral', 'agrees' (background biased toward the pasted class) or
    'against' (biased toward another class)."""
    out = []
    for bg, tgt in zip(plan_.composites.background_labels.tolist(),
                       plan_.composites.targets.tolist()):
        g = plan_.groups[bg]
        out.append("neutral" if g == "neutral" else
                   "agrees" if g == f"toward {tgt}" else "against")
    return out


def accuracy_intervals(clean_hits, hits, kind, seed: int = 0, n_boot: int = 1000,
                       clusters=None) -> dict:
    """95 % intervals of clean accuracy (over target images), of accuracy on all composites
    and per background group, and of the drop neutral - against (groups resampled
    separately), the composite ones over ``clusters`` (each composite's background image;
    None: composites). ``clean_hits (N,)``, ``hits (M,)`` booleans, ``kind (M,)`` group names.
    ``intervals`` holds each as ``Interval.to_dict()`` (value, interval, unit, n).

    Example:
        >>> r = accuracy_intervals([1, 1], [1, 0, 1, 0], ["neutral", "neutral", "against",
        ...                                               "against"], clusters=[0, 0, 1, 1])
        >>> r["clean_ci95"], r["n_clean"], r["n_composites"], r["n_against"]
        ([1.0, 1.0], 2, 4, 2)
        >>> r["intervals"]["against"]["unit"], r["intervals"]["against"]["n"]
        ('background image', 1)
    """
    import numpy as np

    clean_hits = np.asarray(clean_hits, float)
    hits, kind = np.asarray(hits, float), np.asarray(kind)
    unit = V.UNIT if clusters is not None else "composite"
    clusters = np.arange(hits.size) if clusters is None else np.asarray(clusters)
    kw = dict(seed=seed, n_boot=n_boot)
    ivs = {"clean": cluster_mean(clean_hits, unit="target image", **kw),
           "all composites": cluster_mean(hits, clusters, unit=unit, **kw)}
    for k in ("agrees", "neutral", "against"):
        ivs[k] = cluster_mean(hits[kind == k], clusters[kind == k], unit=unit, **kw)
    both = (kind == "neutral") | (kind == "against")
    h, g = hits[both], kind[both]
    if (g == "neutral").any() and (g == "against").any():
        def drop(i):
            return h[i][g[i] == "neutral"].mean() - h[i][g[i] == "against"].mean()
        ivs["drop against vs neutral"] = cluster_statistic(drop, clusters[both], unit=unit,
                                                           strata=g, **kw)
    out = {"clean_ci95": list(ivs["clean"].ci), "n_clean": int(clean_hits.size),
           "all_composites_ci95": list(ivs["all composites"].ci),
           "n_composites": int(hits.size)}
    for k in ("agrees", "neutral", "against"):
        out[f"{k}_ci95"] = list(ivs[k].ci)
        out[f"n_{k}"] = int((kind == k).sum())
    drop_iv = ivs.get("drop against vs neutral")
    out["drop_against_vs_neutral_ci95"] = list(drop_iv.ci) if drop_iv else [float("nan")] * 2
    out["intervals"] = {k: v.to_dict() for k, v in ivs.items()}
    return out


def run(ctx: AuditContext, *, examples: int, **params) -> AnalysisResult:
    """Accuracy of every target model on composites, per background group and class, with
    95 % intervals over background images (:func:`accuracy_intervals`); models compared on
    the same composites as pairs, and claim 000.composites tested when the audit has
    fine-tuned and from-scratch models."""
    seed = int(params.get("seed", 0))
    p = plan(ctx, **params)
    comp, classes = p.composites, ctx.target_classes
    kind = group_of(p, classes)
    names = next(iter(ctx.source_data.values())).classes
    bg, ov = comp.items[:, 0].numpy(), comp.items[:, 1].numpy()
    rows, per_bg = [], []
    summary = {"reference_model": p.reference, "composites": len(comp),
               "side_fraction": comp.side_fraction, "background_images": V.n_units(bg),
               "unit": V.UNIT, "models": {}}
    frame = pd.DataFrame({"kind": kind, "background": comp.background_labels.tolist(),
                          "pasted": comp.targets.tolist()})
    preds, hits, drops = {}, {}, {}
    for model_name, model in ctx.targets.items():
        clean_pred = ctx.predict(model, ctx.target_data)
        clean = clean_pred.accuracy()
        pred = ctx.predict(model, comp, desc=f"composites: {model_name}")
        preds[model_name] = pred.preds
        frame[model_name] = (pred.preds == comp.targets).numpy()
        acc = frame.groupby("kind")[model_name].mean().to_dict()
        rows.append({"model": model_name, "clean target accuracy": clean,
                     "all composites": float(frame[model_name].mean()),
                     **{f"background {k}": acc.get(k, float("nan"))
                        for k in ("agrees", "neutral", "against")}})
        clean_hits = (clean_pred.preds == ctx.target_data.targets).numpy()
        hits[model_name] = frame[model_name].to_numpy(float)
        drops[model_name] = clean_hits[ov].astype(float) - hits[model_name]
        summary["models"][model_name] = {"clean": clean, **{k: float(v) for k, v in acc.items()},
                                         "drop_against_vs_neutral":
                                         acc.get("neutral", float("nan")) -
                                         acc.get("against", float("nan")),
                                         **accuracy_intervals(clean_hits, hits[model_name],
                                                              frame["kind"], seed, clusters=bg)}
    summary["comparisons"] = V.pairwise(hits, list(ctx.targets), bg, seed)
    against = frame["kind"].to_numpy() == "against"
    ft, scratch = V.model_groups(ctx)
    if against.any():
        cut = {k: v[against] for k, v in drops.items()}
        claim = V.group_comparison(cut, cut, ft, scratch, bg[against], seed)
        if claim:
            summary["claim"] = claim
    for (bg_c, pasted), grp in frame.groupby(["background", "pasted"]):
        per_bg.append({"background class": int(bg_c), "background name": names[bg_c],
                       "group": _label(p.groups[bg_c], classes),
                       f"bias of {p.reference} toward pasted": float(p.bias[bg_c, pasted]),
                       "pasted class": classes[pasted], "composites": len(grp),
                       **{m: float(grp[m].mean()) for m in ctx.targets}})
    result = AnalysisResult("composites", summary,
                            {"accuracy": pd.DataFrame(rows), "per_background": pd.DataFrame(per_bg)})
    result.figures["examples"] = example_grid(comp, min(examples, len(comp)), seed=1)
    gallery, result.images = composite_gallery(comp, preds, classes)  # report drill-down
    result.tables["gallery"] = pd.DataFrame(gallery)
    result.notes.append(
        f"{len(comp)} composites: {len(comp.background_ids)} background images x "
        f"{len(comp.overlay_ids)} overlays x {comp.repeats} placements; overlay side "
        f"{comp.side_fraction:.3f} of the image; backgrounds chosen by the bias of "
        f"{p.reference}. Intervals: 95 % cluster bootstrap over background images (clean "
        "accuracy: over target images); models compared as pairs on the same composites.")
    return result


def _label(group: str, classes: list[str]) -> str:
    return group if group == "neutral" else f"biased toward {classes[int(group.split()[1])]}"


def example_grid(comp: CompositeSet, n: int, seed: int = 0):
    """A figure of ``n`` composites with their overlay boxes outlined."""
    from transferscope.analyses._figures import subplots
    from matplotlib.patches import Rectangle

    idx = torch.randperm(len(comp), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx):
        ax.imshow(comp.load_image(i))
        x0, y0, x1, y1 = comp.boxes[i].tolist()
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                               edgecolor="yellow", linewidth=1.5))
        ax.set_title(comp.backgrounds.classes[int(comp.background_labels[i])][:18], fontsize=7)
    return fig


class CompositeOptions(AnalysisOptions):
    """Options of the shared composite plan (:func:`plan`); every analysis whose options
    derive from this model shares one plan in an audit."""

    style: Literal["paper000", "paper001"] = Field("paper001", description="paper 000's "
                                                   "centred overlay or paper 001's layout")
    n_biased: int = Field(3, ge=1, description="background classes per target class")
    n_neutral: int = Field(4, ge=0, description="neutral background classes")
    overlays_per_class: int = Field(10, ge=1, description="target images pasted per class")
    repeats: int = Field(2, ge=1, description="backgrounds per overlay")
    seed: int = 0
    source_set: str | None = Field(None, description="source-image set of the backgrounds "
                                   "(default: the first)")
    reference: str | list[str] | None = Field(None, description="target model(s) whose bias "
                                              "chooses the backgrounds (default: the first)")


class CompositesOptions(CompositeOptions):
    examples: int = Field(8, ge=0, description="composites shown in the figure")


def _points(iv) -> str:
    """An accuracy difference interval in percentage points, with its unit and n."""
    if iv is None or iv.value != iv.value:
        return "n/a"
    ci = f" [{100 * iv.lo:.0f}, {100 * iv.hi:.0f}]" if iv.finite else ""
    return f"{100 * iv.value:.0f} points{ci} over {iv.n} {plural(iv.unit, iv.n)}"


def finding(result: AnalysisResult) -> Finding | None:
    """Accuracy on clean images vs composites over neutral and biased-against backgrounds,
    paired comparisons of the models, and claim 000.composites."""
    s = result.summary
    groups = ("clean", "neutral", "against")
    models = {k: {g: v[g] for g in groups if v.get(g) is not None}
              for k, v in s.get("models", {}).items()}
    if not models:
        return None
    clauses, estimates = [], []
    for k, v in models.items():
        ivs = s["models"][k].get("intervals", {})
        text = f"{k} " + ", ".join(f"{100 * a:.0f} % {g}" for g, a in v.items())
        drop = V.interval(ivs.get("drop against vs neutral"))
        if drop is not None:
            clear = drop.excludes(0.0)
            text += (f" (drop against vs neutral {_points(drop)}"
                     f"{'' if clear else ': no clear difference'})")
            estimates.append((f"{k}: drop against vs neutral", drop))
        for g in groups:
            if V.interval(ivs.get(g)) is not None:
                estimates.append((f"{k}: {g}", V.interval(ivs[g])))
        clauses.append(text)
    for d in s.get("comparisons", []):
        c = V.comparison(d)
        clauses.append(c.words("in accuracy on the same composites"))
        estimates.append((f"{c.a} minus {c.b} on composites", c.difference))
    claim = V.comparison((s.get("claim") or {}).get("comparison"))
    if claim is not None:
        clauses.append(claim.words("in accuracy lost from the clean overlay image to its "
                                   "composite over a background biased against it"))
        estimates.append(("accuracy drop, fine-tuned minus from scratch", claim.difference))
    check = V.claim_check("000.composites", claim, ">", "per composite over a background "
                          "biased against the pasted class: (clean correct - composite "
                          "correct) of the fine-tuned minus that of the from-scratch models")
    return Finding(
        "Composites", "accuracy on clean target images, on composites over neutral "
        "backgrounds, and over backgrounds biased against the pasted class (paper 000, Fig. 2; "
        "95 % intervals over background images)",
        clauses=tuple(clauses), estimates=tuple(estimates), checks=(check,) if check else (),
        caveat=V.caveat(s["background_images"]) if "background_images" in s else "",
        numbers=models)


register_analysis("composites", title="Composite images", paper="paper 000, Fig. 2; paper 001, "
                  "section 4", section="memory", options=CompositesOptions, order=5, run=run,
                  finding=finding,
                  resolution=lambda res, results: _resolution.composite_notes(results, True),
                  gallery=dict(widget="predictions", by="background class",
                               truth="pasted class", label="pasted", skip=["composite"],
                               title="composites with each model's prediction",
                               note="a background's name opens its class", replaces="examples"),
                  drill=(dict(widget="gallery", heading="Composites on this background, with "
                              "each model's prediction"),))

__all__ = ["CompositeOptions", "CompositePlan", "choose_backgrounds", "group_of", "plan", "run"]

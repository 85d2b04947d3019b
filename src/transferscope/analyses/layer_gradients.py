"""Why the lowest layers transfer poorly (paper 002, "Domain-sensitivity of the lowest layers",
Fig. 9 and Fig. 10).

* :func:`layer_gradients` - the mean absolute gradient of the loss on target data per layer
  group of a pre-trained model (Fig. 9: large at both ends, a U shape, means the first layers
  do not fit the new data either).
* :func:`first_layer_ttest` - the first layer group's activations on the object region of
  one image before and after fine-tuning, compared with a paired t-test (Fig. 10: fine-tuning
  raised the mean activation, t = -16.99).
* :func:`summarise_ttests` - the same question over independent units. Fig. 10's test takes
  every (channel, pixel) of one image as a sample, so its t grows with the resolution
  (upsampling an image 2x roughly doubles it) and says nothing about other images. Here each
  image is one unit: its channels are pooled over the object region (the channels are paired
  measurements of that image), and the images are compared before and after in a paired
  test. With one image there is no unit-level test ("one image: cannot tell"); the paper-style
  statistic is kept beside it, labelled as such.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field

from transferscope import roles
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, register_analysis
from transferscope.analyses._weights import parameter_groups
from transferscope.analyses.context import AuditContext
from transferscope.engine.modes import eval_mode
from transferscope.errors import ConfigError, DataError, ModelError
from transferscope.stats import Interval
from transferscope.models.base import TransferModel

__all__ = ["finding", "first_layer_activation", "first_layer_ttest", "first_layer_ttests",
           "gradient_profiles", "GradientOptions", "layer_gradients", "object_mask", "run",
           "summarise_ttests"]


def layer_gradients(model: TransferModel, batches: Iterable, loss_fn: Callable | None = None,
                    max_batches: int | None = None) -> pd.DataFrame:
    """Mean absolute gradient of the loss per layer group, averaged over batches.

    For each batch ``(x, y)`` (a DataLoader or any iterable of pairs; moved to the model's
    device) the gradient of ``loss_fn(model(x), y)`` (default: mean cross entropy) is taken
    with fresh (zeroed) gradients and no optimiser step; a group's value is ``sum |grad| / K``
    over its K parameter elements (a parameter the loss does not reach counts as zero), and
    the batches are averaged with equal weight.

    The model runs in **eval** mode (batch norm uses its running statistics, dropout is off)
    so the result does not depend on batch composition or randomness; frozen parameters get
    ``requires_grad`` for the measurement. Mode, ``requires_grad`` flags are restored and the
    gradients cleared afterwards.

    Returns:
        One row per group: ``index, layer, mean_abs_grad, n_params, is_classifier, batches``.
    """
    loss_fn = loss_fn or F.cross_entropy
    groups = parameter_groups(model)
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    device = next(iter(params.values())).device
    was_training = model.training
    sums = np.zeros(len(groups))
    counts = [sum(params[n].numel() for n in names) for _, names, _ in groups]
    done = 0
    try:
        model.eval()
        for p in params.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            for batch in batches:
                if max_batches is not None and done >= max_batches:
                    break
                x, y = batch[0].to(device), batch[1].to(device)
                model.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                for k, (_, names, _) in enumerate(groups):
                    total = sum(float(params[n].grad.detach().abs().sum())
                                for n in names if params[n].grad is not None)
                    sums[k] += total / counts[k] if counts[k] else np.nan
                done += 1
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(flags[n])
        model.train(was_training)
    if done == 0:
        raise DataError("no batches to compute gradients on; give a non-empty loader")
    return pd.DataFrame([{"index": k, "layer": name, "mean_abs_grad": sums[k] / done,
                          "n_params": counts[k], "is_classifier": is_cls, "batches": done}
                         for k, (name, _, is_cls) in enumerate(groups)])


def first_layer_activation(model: TransferModel, x: torch.Tensor) -> torch.Tensor:
    """``(1, 3, H, W) -> (C, h, w)``: output of the first layer group's last module.

    Captured with a forward hook that is removed again (also on errors); eval mode, no grad.
    For the ResNets that is the stem's batch norm (before the ReLU), for baseline_cnn conv1.
    """
    group = model.layer_groups()[0]
    module = model.get_submodule(group.output_module)
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("out", o.detach()))
    try:
        with eval_mode(model), torch.no_grad():
            model(x.to(next(model.parameters()).device))
    finally:
        handle.remove()
    out = store.get("out")
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise ModelError(f"first layer group {group.name!r} of {model.arch} gave no (1, C, h, w) "
                         "feature map; the t-test needs a convolutional first layer")
    return out[0].float().cpu()


def first_layer_ttest(before: TransferModel, after: TransferModel, x: torch.Tensor,
                      mask: torch.Tensor) -> dict:
    """Paired t-test of first-layer activations inside the object mask (Fig. 10).

    Args:
        before, after: the pre-trained and the fine-tuned model (same architecture).
        x: one input image ``(1, 3, H, W)`` (or ``(3, H, W)``), already normalised.
        mask: ``(H, W)`` bool, True on the object; resized to the feature map by nearest
            neighbour.

    Returns:
        ``t, p`` of ``scipy.stats.ttest_rel(before, after)`` over all (channel, masked pixel)
        pairs - so t < 0 when fine-tuning raised the activations; the paper's statistic, which
        treats pixels as independent samples (see :func:`summarise_ttests` for a test over
        images) - ``difference`` (the image's unit-level value: after minus before, each
        channel pooled over the mask, averaged over channels), ``pooled_before`` /
        ``pooled_after`` (per channel), ``mean_before``,
        ``mean_after``, ``n`` pairs, ``channels``, ``pixels``, ``layer`` and ``identical``.
        If every pair is equal (e.g. the same weights) the test is undefined; then
        ``t = 0.0, p = 1.0`` and ``identical = True``.
    """
    from scipy.stats import ttest_rel

    x = x.unsqueeze(0) if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[0] != 1:
        raise ConfigError(f"first_layer_ttest needs one image (1, 3, H, W), got {tuple(x.shape)}")
    mask = torch.as_tensor(mask)
    if mask.shape != x.shape[-2:]:
        raise ConfigError(f"mask shape {tuple(mask.shape)} must equal the image's (H, W) "
                          f"{tuple(x.shape[-2:])}")
    a, b = first_layer_activation(before, x), first_layer_activation(after, x)
    if a.shape != b.shape:
        raise ModelError(f"first-layer maps differ in shape ({tuple(a.shape)} vs "
                         f"{tuple(b.shape)}); compare two models of the same architecture")
    m = F.interpolate(mask.float()[None, None], size=a.shape[-2:], mode="nearest")[0, 0] > 0.5
    if not m.any():
        raise ConfigError("the object mask is empty at the first layer's resolution; give a "
                          "mask with True on the object region")
    va, vb = a[:, m].double().flatten().numpy(), b[:, m].double().flatten().numpy()
    pooled_a, pooled_b = a[:, m].double().mean(dim=1), b[:, m].double().mean(dim=1)
    identical = bool(np.all(va == vb))
    if identical:
        t, p = 0.0, 1.0
    else:
        res = ttest_rel(va, vb)
        t, p = float(res.statistic), float(res.pvalue)
    return {"t": t, "p": p, "mean_before": float(va.mean()), "mean_after": float(vb.mean()),
            "difference": float(pooled_b.mean() - pooled_a.mean()),
            "pooled_before": pooled_a.tolist(), "pooled_after": pooled_b.tolist(),
            "n": int(va.size), "channels": int(a.shape[0]), "pixels": int(m.sum()),
            "layer": before.layer_groups()[0].name, "identical": identical}


def object_mask(height: int, width: int, region: str = "center") -> torch.Tensor:
    """``(H, W)`` bool object mask without annotations: ``"center"`` the central box of half
    of each side (where the object sits in most photo data sets), ``"all"`` the whole image.

    >>> object_mask(4, 4).int().tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    if region == "all":
        return torch.ones(height, width, dtype=torch.bool)
    if region != "center":
        raise ConfigError(f"object region must be 'center' or 'all', got {region!r}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[height // 4: height - height // 4, width // 4: width - width // 4] = True
    return mask


def first_layer_ttests(before: TransferModel, after: TransferModel, images, *,
                       region: str = "center") -> pd.DataFrame:
    """:func:`first_layer_ttest` on each image of ``images`` (an iterable of ``(3, H, W)``
    normalised tensors, or ``(x, y)`` pairs) with :func:`object_mask` ``region``: one row per
    image (``image`` index, ``t``, ``p``, ``mean_before``, ``mean_after``, ``n``, ...)."""
    rows = []
    for i, item in enumerate(images):
        x = item[0] if isinstance(item, (tuple, list)) else item
        res = first_layer_ttest(before, after, x, object_mask(*x.shape[-2:], region))
        rows.append({"image": i, **res})
    if not rows:
        raise DataError("first-layer t-test: no images given")
    return pd.DataFrame(rows)


def summarise_ttests(table: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Fig. 10's question over independent units: one row of ``table`` per image (columns
    ``mean_before``, ``mean_after`` pooled over channels and the object region, and the
    paper-style per-image ``t``, ``p``).

    Unit level (the image): ``unit_t``, ``unit_p`` of a paired t-test over images (t < 0:
    fine-tuning raised the activations), ``unit_difference`` (after minus before, cluster
    bootstrap over images; an :class:`~transferscope.stats.Interval` dict) and
    ``unit_sign_flip_p``; with one image these are NaN and ``unit_note`` says "one image:
    cannot tell". Paper style (pixels as samples; grows with resolution): ``raised`` /
    ``lowered`` (images with p < alpha and t < 0 / > 0) and ``median_t``.

    >>> s = summarise_ttests(pd.DataFrame({"t": [-3.0, -1.0, 2.0], "p": [0.001, 0.3, 0.01],
    ...                                    "mean_before": [1, 1, 1], "mean_after": [2, 1, 0]}))
    >>> s["raised"], s["images"], s["unit_difference"]["value"]
    (1, 3, 0.0)
    >>> summarise_ttests(pd.DataFrame({"t": [-20.0], "p": [1e-9], "mean_before": [1.0],
    ...                                "mean_after": [2.0]}))["unit_note"]
    'one image: cannot tell'
    """
    from scipy.stats import ttest_rel

    from transferscope.stats import cluster_mean, sign_flip_p

    sig = table["p"] < alpha
    before = table["mean_before"].to_numpy(float)
    after = table["mean_after"].to_numpy(float)
    n = len(table)
    diff = after - before
    iv = cluster_mean(diff, unit="image")
    t = p = float("nan")
    note = "one image: cannot tell" if n < 2 else ""
    if n >= 2:
        if np.all(diff == diff[0]):
            t, p = (0.0, 1.0) if diff[0] == 0 else (float(-np.sign(diff[0]) * np.inf), 0.0)
        else:
            res = ttest_rel(before, after)
            t, p = float(res.statistic), float(res.pvalue)
    return {"images": int(n), "unit_t": t, "unit_p": p, "unit_difference": iv.to_dict(),
            "unit_sign_flip_p": sign_flip_p(diff) if n >= 2 else float("nan"),
            "unit_note": note, "raised": int((sig & (table["t"] < 0)).sum()),
            "lowered": int((sig & (table["t"] > 0)).sum()),
            "median_t": float(table["t"].median()),
            "mean_before": float(before.mean()), "mean_after": float(after.mean()),
            "alpha": alpha}


def gradient_profiles(runs: Mapping[str, tuple], *, max_batches: int | None = None,
                      loss_fn: Callable | None = None, ttest: dict | None = None) -> AnalysisResult:
    """Fig. 9 for several target sets: ``runs`` maps a name to ``(model, batches)``.

    ``ttest``: an optional :func:`first_layer_ttest` result to report alongside (Fig. 10).
    """
    if not runs:
        raise ConfigError("gradient analysis needs at least one (model, batches) pair")
    tables = {name: layer_gradients(model, batches, loss_fn, max_batches)
              for name, (model, batches) in runs.items()}
    long = pd.concat([t.assign(target=n) for n, t in tables.items()], ignore_index=True)
    summary = {}
    for name, t in tables.items():
        body = t[~t["is_classifier"]]
        summary[name] = {"argmax_layer": str(t.loc[t["mean_abs_grad"].idxmax(), "layer"]),
                         "argmin_non_classifier": str(body.loc[body["mean_abs_grad"].idxmin(),
                                                               "layer"]) if len(body) else None,
                         "batches": int(t["batches"].iloc[0])}
    result_tables = {"gradients": long}
    if ttest is not None:
        summary["first_layer_ttest"] = ttest
        result_tables["first_layer_ttest"] = pd.DataFrame([ttest])
    result = AnalysisResult("layer_gradients", summary, result_tables)
    result.figures["gradients"] = _figure(tables)
    result.notes.append("Mean |dL/dtheta| per layer group in eval mode (running BN statistics), "
                        "averaged over batches with equal weight; no optimiser step.")
    return result


def _figure(tables):
    from transferscope.analyses._figures import subplots

    longest = max(tables.values(), key=len)
    fig, ax = subplots(figsize=(max(6.0, 0.25 * len(longest)), 3.5))
    for name, t in tables.items():
        ax.plot(t["index"], t["mean_abs_grad"], marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    ax.set_xticks(range(len(longest)))
    ax.set_xticklabels(longest["layer"], rotation=90, fontsize=6)
    ax.set_xlabel("layer group (input to output)")
    ax.set_ylabel("mean |gradient|")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


class GradientOptions(AnalysisOptions):
    max_batches: int | None = Field(4, ge=1, description="batches averaged per model")
    ttest_images: int = Field(8, ge=0, description="target validation images of the "
                              "first-layer t-test (Fig. 10), evenly spaced; 0: no t-test")
    ttest_region: str = Field("center", pattern="^(center|all)$", description="object region "
                              "of the t-test: the central box (half of each side) or all")


def run(ctx: AuditContext, *, max_batches: int | None, ttest_images: int,
        ttest_region: str) -> AnalysisResult:
    """Fig. 9 at the start of fine-tuning: gradients of every fine-tuned model's initial
    weights (theta_A, from its run directory) on the context's target data; and Fig. 10: the
    first layer's activations before (theta_A) and after fine-tuning, paired t-test per image
    on ``ttest_images`` target validation images (models with a convolutional first layer)."""
    from transferscope.data import eval_transform
    from transferscope.engine import load_run

    runs, tests = {}, []
    for name in ctx.with_role(roles.PT, same_arch=False):
        if ctx.entries[name].run_dir is None:
            continue
        theta_a = load_run(ctx.entries[name].run_dir, "init")
        data = ctx.target_data.with_transform(eval_transform(theta_a.norm, ctx.image_size))
        runs[name] = (theta_a, torch.utils.data.DataLoader(data, batch_size=ctx.batch_size,
                                                           shuffle=False))
        if ttest_images and len(data):
            picks = np.linspace(0, len(data) - 1, min(ttest_images, len(data))).round()
            try:
                t = first_layer_ttests(theta_a, ctx.targets[name],
                                       (data[int(i)] for i in picks), region=ttest_region)
            except ModelError:  # e.g. a ViT: its first group gives tokens, not a feature map
                continue
            tests.append(t.assign(model=name))
    result = gradient_profiles(runs, max_batches=max_batches)
    if tests:
        table = pd.concat(tests, ignore_index=True)
        result.tables["first_layer_ttest"] = table
        result.summary["first_layer_ttest"] = {
            m: summarise_ttests(t) for m, t in table.groupby("model", sort=False)}
        result.notes.append(
            f"First-layer test (Fig. 10): the first layer group's outputs before (theta_A) and "
            f"after fine-tuning in the "
            f"{'central box (half of each side)' if ttest_region == 'center' else 'whole image'}"
            f" of each of {ttest_images} evenly spaced validation images. Unit level: each "
            "image's channels pooled over the region, paired t-test over images. Paper style: "
            "paired t-test over (channel, pixel) pairs of one image, which treats pixels as "
            "independent (its t grows with the resolution). t < 0: fine-tuning raised the "
            "activations. The region is a stand-in for an object mask.")
    return result


def _ttest_clause(model: str, v: dict) -> tuple[str, Interval | None]:
    paper = (f"paper-style t over (channel, pixel) of one image, pixels taken as independent: "
             f"median {v['median_t']:.2f}, raised in {v['raised']} of {v['images']} images at "
             f"p < {v['alpha']:g}")
    d = v.get("unit_difference")
    if not d:  # a summary written before the unit-level test
        return f"{model} first layer: {paper}", None
    iv = Interval(**d)
    if v.get("unit_note") or v["images"] < 2:
        return f"{model} first layer: one image: cannot tell ({paper})", iv
    return (f"{model} first layer after minus before {iv}, paired t over images "
            f"{v['unit_t']:.2f} (p = {v['unit_p']:.2g}); {paper}", iv)


def finding(result: AnalysisResult) -> Finding | None:
    """Where the gradients are largest and smallest at the start of fine-tuning; the first
    layer's change over images (Fig. 10)."""
    s = {k: v for k, v in result.summary.items() if isinstance(v, dict) and "argmax_layer" in v}
    clauses = [f"{k} largest in {v['argmax_layer']}, smallest (below the classifier) in "
               f"{v['argmin_non_classifier']}" for k, v in s.items()]
    estimates, caveat = [], ""
    tests = result.summary.get("first_layer_ttest")
    if isinstance(tests, dict) and all(isinstance(v, dict) and "images" in v
                                       for v in tests.values()):
        for m, v in tests.items():
            clause, iv = _ttest_clause(m, v)
            clauses.append(clause)
            if iv is not None:
                estimates.append((f"{m} first-layer activation, after minus before", iv))
            if v["images"] < 2:
                caveat = "one image: cannot tell whether fine-tuning moves the first layer"
    return Finding("Layer-wise gradients", "at the start of fine-tuning (paper 002, Fig. 9; "
                   "first-layer activations, Fig. 10)", clauses=tuple(clauses),
                   estimates=tuple(estimates), caveat=caveat,
                   numbers={k: v["argmax_layer"] for k, v in s.items()})


register_analysis("layer_gradients", title="Layer-wise gradients at the start of fine-tuning",
                  paper="paper 002, Fig. 9", section="transferability", order=4,
                  options=GradientOptions, run=run, finding=finding,
                  applies=lambda ctx: any(ctx.entries[n].run_dir for n in
                                          ctx.with_role(roles.PT, same_arch=False)))

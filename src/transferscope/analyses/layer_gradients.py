"""Why the lowest layers transfer poorly (paper 002, "Domain-sensitivity of the lowest layers",
Fig. 9 and Fig. 10).

* :func:`layer_gradients` - the mean absolute gradient of the loss on target data per layer
  group of a pre-trained model (Fig. 9: large at both ends, a U shape, means the first layers
  do not fit the new data either).
* :func:`first_layer_ttest` - the first layer group's activations on the object region of
  one image before and after fine-tuning, compared with a paired t-test (Fig. 10: fine-tuning
  raised the mean activation, t = -16.99).
"""

from __future__ import annotations

import html
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, register_analysis
from transferscope.analyses._weights import parameter_groups
from transferscope.analyses.context import AuditContext
from transferscope.engine.modes import eval_mode
from transferscope.errors import ConfigError, DataError, ModelError
from transferscope.models.base import TransferModel


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
        pairs - so t < 0 when fine-tuning raised the activations - ``mean_before``,
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
    identical = bool(np.all(va == vb))
    if identical:
        t, p = 0.0, 1.0
    else:
        res = ttest_rel(va, vb)
        t, p = float(res.statistic), float(res.pvalue)
    return {"t": t, "p": p, "mean_before": float(va.mean()), "mean_after": float(vb.mean()),
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
    """How many images had their first-layer activations raised (t < 0, p < alpha) or lowered
    by fine-tuning, and the median t; Fig. 10 reports one image with t = -16.99 (raised).

    >>> summarise_ttests(pd.DataFrame({"t": [-3.0, -1.0, 2.0], "p": [0.001, 0.3, 0.01],
    ...                                "mean_before": [1, 1, 1], "mean_after": [2, 1, 0]}))["raised"]
    1
    """
    sig = table["p"] < alpha
    return {"images": int(len(table)), "raised": int((sig & (table["t"] < 0)).sum()),
            "lowered": int((sig & (table["t"] > 0)).sum()),
            "median_t": float(table["t"].median()),
            "mean_before": float(table["mean_before"].mean()),
            "mean_after": float(table["mean_after"].mean()), "alpha": alpha}


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


def run(ctx: AuditContext, max_batches: int | None = 4, ttest_images: int = 8,
        ttest_region: str = "center") -> AnalysisResult:
    """Fig. 9 at the start of fine-tuning: gradients of every fine-tuned model's initial
    weights (theta_A, from its run directory) on the context's target data; and Fig. 10: the
    first layer's activations before (theta_A) and after fine-tuning, paired t-test per image
    on ``ttest_images`` target validation images (models with a convolutional first layer)."""
    from transferscope.data import eval_transform
    from transferscope.engine import load_run

    runs, tests = {}, []
    for name in ctx.with_role("fine-tuned", same_arch=False):
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
            f"First-layer t-test (Fig. 10): paired t-test of the first layer group's outputs "
            f"before (theta_A) and after fine-tuning over (channel, pixel) pairs in the "
            f"{'central box (half of each side)' if ttest_region == 'center' else 'whole image'}"
            f" of each of {ttest_images} evenly spaced validation images; t < 0: fine-tuning "
            "raised the activations. The region is a stand-in for an object mask.")
    return result


def finding(result: AnalysisResult) -> Finding | None:
    """Where the gradients are largest and smallest at the start of fine-tuning."""
    s = {k: v for k, v in result.summary.items() if isinstance(v, dict) and "argmax_layer" in v}
    parts = [f"{html.escape(k)} largest in {html.escape(v['argmax_layer'])}, smallest (below "
             f"the classifier) in {html.escape(str(v['argmin_non_classifier']))}"
             for k, v in s.items()]
    text = ("<b>Layer-wise gradients</b> at the start of fine-tuning (paper 002, Fig. 9) - "
            + "; ".join(parts) + ".")
    tests = result.summary.get("first_layer_ttest")
    if isinstance(tests, dict) and all(isinstance(v, dict) and "images" in v
                                       for v in tests.values()):
        text += " First-layer activations (Fig. 10): " + "; ".join(
            f"{html.escape(m)}: raised in {v['raised']} of {v['images']} images, lowered in "
            f"{v['lowered']} (paired t-test, p &lt; {v['alpha']:g}; median t "
            f"{v['median_t']:.2f})" for m, v in tests.items()) + "."
    return Finding.from_html(text, {k: v["argmax_layer"] for k, v in s.items()})


register_analysis("layer_gradients", title="Layer-wise gradients at the start of fine-tuning",
                  paper="paper 002, Fig. 9", section="transferability", order=4,
                  options=GradientOptions, run=run, finding=finding,
                  applies=lambda ctx: any(ctx.entries[n].run_dir for n in
                                          ctx.with_role("fine-tuned", same_arch=False)))

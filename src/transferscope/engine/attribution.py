"""Batched Grad-CAM maps (Selvaraju et al.), cached like predictions.

One forward and one backward pass per batch, targets per sample (the same maps as captum's
``LayerGradCam`` and pytorch-grad-cam, see ``benchmarks/bench_anchors.py``). The backward
pass stops at the target layer and computes no parameter gradients: the layer's output is
made a leaf and the parameters are frozen for the call, so nothing before the layer is
recorded. Maps are kept at the layer's resolution and upsampled by the caller.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from transferscope._progress import progress_bar
from transferscope.data.transforms import describe_transform, eval_transform
from transferscope.engine.cache import ResultCache
from transferscope.engine.inference import default_cache
from transferscope.errors import ConfigError
from transferscope.models.base import TransferModel


def cam_layer(model: TransferModel) -> str:
    """The last layer group with a spatial (conv) output: Grad-CAM's default target layer."""
    for group in reversed(model.layer_groups(include_classifier=False)):
        mods = [model.get_submodule(path) for path in group.modules]
        spatial = any(isinstance(m, nn.Conv2d) for top in mods for m in top.modules())
        if spatial and not isinstance(mods[-1], nn.Linear):
            return group.output_module
    raise ConfigError(f"{model.arch} has no convolutional layer group for Grad-CAM; pass layer=")


def gradcam_batch(model: TransferModel, x: torch.Tensor, target: torch.Tensor | None,
                  layer: str | None = None, return_logits: bool = False):
    """Grad-CAM (ReLU of gradient-weighted activations) of ``target`` classes.

    Shapes: ``x (N, 3, H, W)``, ``target (N,)`` (None: each image's predicted class) ->
    ``(N, h, w)`` at the layer's resolution; with ``return_logits`` also the ``(N, C)`` logits.
    """
    module = model.get_submodule(layer or cam_layer(model))
    store = {}

    def hook(_mod, _inp, out):
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"Grad-CAM layer {layer!r} returns {type(out).__name__}, not a "
                              "tensor; pick a module with a single (N, C, h, w) output")
        store["a"] = out.detach().requires_grad_()
        return store["a"]

    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    handle = module.register_forward_hook(hook)
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            logits = model(x)
            tgt = logits.argmax(1) if target is None else torch.as_tensor(target).long()
            grad, = torch.autograd.grad(logits.gather(1, tgt.view(-1, 1)).sum(), store["a"])
    finally:
        handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    act = store["a"].detach()
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1))
    return (cam, logits.detach()) if return_logits else cam


def gradcam(model: TransferModel, data, target: str | torch.Tensor = "pred", *,
            layer: str | None = None, transform: Callable | None = None, image_size: int = 224,
            batch_size: int = 32, cache: ResultCache | None = None,
            progress: bool | None = None) -> torch.Tensor:
    """Grad-CAM maps for every image of ``data``: ``(N, h, w)``, cached.

    ``target`` is ``"pred"`` (the model's own prediction), ``"label"`` (the data's labels) or
    a ``(N,)`` tensor of class indices.
    """
    cache = default_cache() if cache is None else cache
    if transform is None and hasattr(data, "model_transform"):
        transform = data.model_transform(model.norm, model.fixed_size)
    transform = transform or eval_transform(model.norm, model.input_size(image_size))
    layer = layer or cam_layer(model)
    tgt_desc = target if isinstance(target, str) else torch.as_tensor(target).tolist()
    key = cache.key(kind="gradcam", weights=model.weights_hash(), data=data.digest,
                    transform=describe_transform(transform), layer=layer, target=tgt_desc)
    hit = cache.get(key)
    if hit is not None:
        return hit["cam"]
    loader = DataLoader(data.with_transform(transform), batch_size=batch_size)
    maps, start = [], 0
    with progress_bar(len(data), f"grad-cam {model.arch} on {data.root.name}", progress) as adv:
        for x, y in loader:
            if isinstance(target, str):
                t = None if target == "pred" else y  # None: the prediction of this pass
            else:
                t = torch.as_tensor(target)[start:start + len(x)]
            maps.append(gradcam_batch(model, x, t, layer))
            start += len(x)
            adv(len(x))
    cam = torch.cat(maps).float().contiguous()
    cache.put(key, {"cam": cam}, arch=model.arch, layer=layer)
    return cam

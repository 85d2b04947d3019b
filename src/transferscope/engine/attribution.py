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
from transferscope.engine.device import resolve_device, to_device
from transferscope.engine.inference import default_cache
from transferscope.errors import ConfigError
from transferscope.models.base import TransferModel

__all__ = ["cam_layer", "gradcam", "gradcam_batch", "to_spatial"]


def cam_layer(model: TransferModel) -> str:
    """Grad-CAM's default target layer.

    Token models (ViT/DeiT, Hugging Face ViT): the first norm of the last transformer block
    (``norm1`` / ``layernorm_before``), whose output ``(N, T, D)`` still has one token per
    patch (after it, only the class token feeds the head). Conv nets: the last layer group
    with a spatial (conv) output.
    """
    groups = model.layer_groups(include_classifier=False)
    for group in reversed(groups):
        top = model.get_submodule(group.output_module)
        for attr in ("norm1", "layernorm_before"):
            if isinstance(getattr(top, attr, None), nn.Module):
                return f"{group.output_module}.{attr}"
        if any(hasattr(m, attr) for m in top.modules() for attr in ("norm1", "layernorm_before")):
            break  # a transformer stage without a last-block norm at the top: say so below
    for group in reversed(groups):
        mods = [model.get_submodule(path) for path in group.modules if _is_module(model, path)]
        spatial = any(isinstance(m, nn.Conv2d) for top in mods for m in top.modules())
        pooled = any("adaptive" in type(m).__name__.lower() for m in mods)  # 1x1 after it
        if spatial and not pooled and not isinstance(mods[-1], nn.Linear):
            return group.output_module
    raise ConfigError(f"{model.arch} has no convolutional layer group for Grad-CAM; pass layer=")


def _is_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:  # a parameter path (a ViT's cls_token)
        return False


def to_spatial(t: torch.Tensor, module: nn.Module, prefix_tokens: int = 0) -> torch.Tensor:
    """A layer output as ``(N, C, h, w)``: tokens ``(N, T, D)`` lose their ``prefix_tokens``
    (class/register/distillation tokens; inferred as ``T - floor(sqrt(T))**2`` when 0) and
    the ``h*w`` patch tokens become a map; channels-last ``(N, h, w, C)`` outputs of a plain
    LayerNorm (timm Swin) are permuted; conv outputs pass unchanged.

    >>> to_spatial(torch.zeros(2, 1 + 16, 8), nn.LayerNorm(8), 1).shape
    torch.Size([2, 8, 4, 4])
    """
    if t.dim() == 3:
        n, tokens, d = t.shape
        side = int(tokens ** 0.5)
        prefix = prefix_tokens or tokens - side * side
        side = int(round((tokens - prefix) ** 0.5))
        if side * side != tokens - prefix:
            raise ConfigError(f"Grad-CAM: {tokens} tokens minus {prefix} prefix tokens are not a "
                              "square grid of patches; pass layer= a spatial layer")
        return t[:, prefix:].transpose(1, 2).reshape(n, d, side, side)
    if t.dim() == 4 and isinstance(module, nn.LayerNorm) and "2d" not in \
            type(module).__name__.lower() and t.shape[-1] == module.normalized_shape[-1]:
        return t.permute(0, 3, 1, 2)
    return t


def gradcam_batch(model: TransferModel, x: torch.Tensor, target: torch.Tensor | None,
                  layer: str | None = None, return_logits: bool = False):
    """Grad-CAM (ReLU of gradient-weighted activations) of ``target`` classes.

    Shapes: ``x (N, 3, H, W)``, ``target (N,)`` (None: each image's predicted class) ->
    ``(N, h, w)`` at the layer's resolution (a token layer's patch grid, see
    :func:`to_spatial`); with ``return_logits`` also the ``(N, C)`` logits.
    """
    module = model.get_submodule(layer or cam_layer(model))
    store = {}

    def hook(_mod, _inp, out):
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"Grad-CAM layer {layer!r} returns {type(out).__name__}, not a "
                              "tensor; pick a module with a single (N, C, h, w) or token "
                              "(N, T, D) output")
        store["a"] = out.detach().requires_grad_()
        return store["a"]

    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]  # each sub-module's, not only the top's
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
        for m, was in modes:
            m.training = was
    prefix = getattr(model, "num_prefix_tokens", 0)
    act = to_spatial(store["a"].detach(), module, prefix)
    grad = to_spatial(grad, module, prefix)
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1))
    return (cam, logits.detach()) if return_logits else cam


def gradcam(model: TransferModel, data, target: str | torch.Tensor = "pred", *,
            layer: str | None = None, transform: Callable | None = None, image_size: int = 224,
            batch_size: int = 32, cache: ResultCache | None = None,
            progress: bool | None = None, device: str | torch.device | None = "auto"
            ) -> torch.Tensor:
    """Grad-CAM maps for every image of ``data``: ``(N, h, w)``, cached, on the CPU.

    ``target`` is ``"pred"`` (the model's own prediction), ``"label"`` (the data's labels) or
    a ``(N,)`` tensor of class indices. ``device``: where to compute (``"auto"``: CUDA when
    present; see :func:`~transferscope.engine.device.resolve_device`).
    """
    device = resolve_device(device)
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
    loader = DataLoader(data.with_transform(transform), batch_size=batch_size,
                        pin_memory=device.type == "cuda")
    maps, start = [], 0
    model.to(device)
    try:
        with progress_bar(len(data), f"grad-cam {model.arch} on {data.root.name}",
                          progress) as adv:
            for x, y in loader:
                if isinstance(target, str):
                    t = None if target == "pred" else y  # None: the prediction of this pass
                else:
                    t = torch.as_tensor(target)[start:start + len(x)]
                t = None if t is None else to_device(t, device)
                maps.append(gradcam_batch(model, to_device(x, device), t, layer).cpu())
                start += len(x)
                adv(len(x))
    finally:
        model.to("cpu")
    cam = torch.cat(maps).float().contiguous()
    cache.put(key, {"cam": cam}, arch=model.arch, layer=layer)
    return cam

"""Bring your own ``nn.Module``: wrap it into a :class:`TransferModel` (the module itself is
left untouched: the model holds a copy)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from transferscope.data.transforms import IMAGENET_NORM, Normalization
from transferscope.errors import ModelError
from transferscope.models.base import LayerGroup, TransferModel
from transferscope.models.sources import (assemble, find_head, timm_preprocessing,
                                          torchvision_preprocessing)

__all__ = ["identify", "wrap_module"]


def wrap_module(module: nn.Module, head: str | None = None, *, arch: str | None = None,
                norm: Normalization | None = None, groups: list[str] | None = None,
                default_size: int | None = None) -> TransferModel:
    """Wrap a classifier whose last layer is an ``nn.Linear`` (at dotted path ``head``; by
    default timm's/Hugging Face's declared classifier, else the last ``nn.Linear``).

    ``module`` is deep-copied, so it is not changed: the copy's linear layer becomes the
    :class:`~transferscope.models.ClassifierHead` (weights kept) and is replaced by
    ``nn.Identity``, so the copy must return ``(N, D)`` features (true for torchvision, timm
    and Hugging Face classifiers). Layer groups are one per block
    (:func:`~transferscope.models.groups.auto_groups`) unless ``groups`` lists dotted paths.

    Preprocessing comes from the module when it declares it (timm ``pretrained_cfg``,
    torchvision builders, Hugging Face configs) unless ``norm`` is given; otherwise ImageNet
    mean/std is used with a warning. timm, torchvision and Hugging Face modules are recognised,
    so :func:`~transferscope.models.save_model` stores a builder spec and ``load_model`` (and
    every command) rebuilds them with no Python.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.mobilenet_v3_small()
        >>> m = wrap_module(net, head="classifier.3")
        >>> m.num_classes, m.arch, type(net.classifier[3]).__name__
        (1000, 'torchvision:mobilenet_v3_small', 'Linear')
    """
    hf = _is_hf(module)
    if head is None:
        hint = "classifier" if hf else (getattr(module, "pretrained_cfg", None) or {}).get(
            "classifier")
        head = find_head(module, hint if isinstance(hint, str) else None)
    elif not isinstance(dict(module.named_modules()).get(head), nn.Linear):
        found = dict(module.named_modules()).get(head)
        raise ModelError(f"wrap_module: {type(module).__name__} has no nn.Linear at {head!r} "
                         f"({'missing' if found is None else type(found).__name__}); pass "
                         "head= the dotted path of its final nn.Linear")
    builder, found_norm, size = identify(module, head)
    if norm is None and found_norm is None:
        warnings.warn(f"wrap_module: {type(module).__name__} declares no preprocessing; using "
                      "ImageNet mean/std (pass norm= to set it)", stacklevel=2)
    norm = norm or found_norm or IMAGENET_NORM
    size = default_size or size or 224
    layer_groups = None
    if groups is not None:
        prefix = "backbone.model." if hf else "backbone."
        layer_groups = [LayerGroup(g, (prefix + g,)) for g in groups]
    name = arch or (f"{builder['source']}:{builder['name']}" if builder else "custom")
    model = assemble(module, head, arch=name, norm=norm, default_size=size, builder=builder,
                     hf=hf, groups=layer_groups)
    return model


def _is_hf(module: nn.Module) -> bool:
    return any(c.__name__ == "PreTrainedModel" for c in type(module).__mro__)


def _shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def identify(module: nn.Module, head: str) -> tuple[dict | None, Normalization | None, int | None]:
    """``(builder, preprocessing, input size)`` of a timm, torchvision or Hugging Face module
    (verified: the named builder gives the same parameter names and shapes), else Nones."""
    if _is_hf(module):
        from transferscope.models.sources import hf_preprocessing

        cfg = module.config.to_dict()
        size = int(getattr(module.config, "image_size", 224) or 224)
        folder = getattr(module.config, "_name_or_path", "") or ""
        norm = None
        try:
            from pathlib import Path

            if folder and (Path(folder) / "preprocessor_config.json").is_file():
                norm, size = hf_preprocessing(Path(folder), module.config)
        except ModelError:
            norm = None
        return {"source": "hf", "name": folder or type(module).__name__, "hf_config": cfg}, \
            norm, size
    target = _shapes(module)
    arch = (getattr(module, "pretrained_cfg", None) or {}).get("architecture")
    if arch and type(module).__module__.startswith("timm."):
        import timm

        kwargs = {}
        pe = getattr(module, "patch_embed", None)
        if getattr(pe, "img_size", None) is not None and getattr(pe, "strict_img_size", True):
            kwargs["img_size"] = tuple(pe.img_size)[-1]
        try:
            with torch.device("meta"):
                ref = timm.create_model(arch, num_classes=module.get_classifier().out_features,
                                        **kwargs)
        except Exception:  # noqa: BLE001 - an unbuildable variant is simply a custom module
            ref = None
        norm, size = timm_preprocessing(module)
        if ref is not None and _shapes(ref) == target:
            b = {"source": "timm", "name": arch}
            if kwargs:
                b["fixed_size"] = True
                size = kwargs["img_size"]
            return b, norm, size
        return None, norm, size
    if type(module).__module__.startswith("torchvision.models"):
        import torchvision

        n = dict(module.named_modules())[head].out_features
        for name in torchvision.models.list_models(module=torchvision.models):
            builder = torchvision.models.get_model_builder(name)
            if builder.__module__ != type(module).__module__:
                continue
            try:
                with torch.device("meta"):
                    ref = builder(weights=None, num_classes=n)
            except Exception:  # noqa: BLE001
                continue
            if type(ref) is type(module) and _shapes(ref) == target:
                norm, size = torchvision_preprocessing(name)
                return {"source": "torchvision", "name": name}, norm, size
    return None, None, None

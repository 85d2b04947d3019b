"""Architecture registry: ``create_model(name, num_classes, init)`` for every architecture.

An architecture registers a builder ``(num_classes, image_size) -> TransferModel`` (random
init), the name of its native classifier (so native checkpoints map onto the uniform
``backbone.*`` / ``head.*`` keys) and an optional loader of its ImageNet weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from transferscope._io import load_state_dict_file
from transferscope.errors import ModelError
from transferscope.models.base import TransferModel

__all__ = ["ArchSpec", "check_model_name", "create_model", "get_spec", "init_weights",
           "list_models", "load_weights", "register", "set_preprocessing", "SOURCE_CLASSES",
           "to_uniform_keys"]

SOURCE_CLASSES = 1000


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[[int, int], TransferModel]
    native_head: str
    imagenet_weights: Callable[[], dict[str, torch.Tensor]] | None = None
    default_size: int = 224
    description: str = ""


_REGISTRY: dict[str, ArchSpec] = {}


def register(name: str, *, native_head: str, imagenet_weights=None, default_size: int = 224,
             description: str = ""):
    """Decorator registering a builder ``fn(num_classes, image_size) -> TransferModel``."""

    def deco(fn):
        _REGISTRY[name] = ArchSpec(name, fn, native_head, imagenet_weights, default_size,
                                   description)
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(arch: str) -> ArchSpec:
    if arch not in _REGISTRY:
        from transferscope.errors import did_you_mean

        raise ModelError(f"unknown model {arch!r}{did_you_mean(arch, list_models())}; known: "
                         f"{', '.join(list_models())}, or "
                         "timm:<name>, torchvision:<name>, hf:<folder> (`transferscope models`)")
    return _REGISTRY[arch]


def check_model_name(name: str) -> str:
    """``name`` if it names a model (registered, ``timm:``, ``torchvision:``, ``hf:``), else a
    one-line :class:`~transferscope.errors.ConfigError` -- call it when parsing settings, so
    a bad name fails before anything trains.

    Example:
        >>> check_model_name("timm:resnet18")
        'timm:resnet18'
    """
    from transferscope.errors import ConfigError
    from transferscope.models.sources import MODEL_SOURCES, check_external_name, split_name

    source, rest = split_name(name)
    if source != "registry":
        check_external_name(name)
    elif name not in _REGISTRY:
        hint = ""
        if "/" in name and name.split("/", 1)[0] in MODEL_SOURCES:
            hint = f" (did you mean {name.replace('/', ':', 1)}?)"
        else:
            from transferscope.errors import did_you_mean

            hint = did_you_mean(name, list_models())
        raise ConfigError(f"unknown model {name!r}{hint}; use a registered one "
                          f"({', '.join(list_models())}) or "
                          + ", ".join(f"{s}:<...>" for s in MODEL_SOURCES))
    return name


def to_uniform_keys(state: dict[str, torch.Tensor], native_head: str,
                    prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """Map a native checkpoint's keys (``fc.weight``) to transferscope's (``head.fc.weight``).

    A state with ``backbone.*`` keys is transferscope's already (a native timm ConvNeXt has
    ``head.norm.*`` keys of its own, so ``head.*`` alone proves nothing).
    """
    if any(k.startswith("backbone.") for k in state):
        return dict(state)
    out = {}
    for k, v in state.items():
        if k.startswith(native_head + "."):
            out["head.fc." + k[len(native_head) + 1:]] = v
        else:
            out[prefix + k] = v
    return out


def load_weights(model: TransferModel, state: dict[str, torch.Tensor], *, source: str,
                 include_head: bool = True) -> None:
    """Load a uniform-keyed state dict, naming the first mismatching layer on failure."""
    if "feature_mask" in state and getattr(model, "feature_mask", None) is None:
        model.prune_features([])  # a pruned model: make room for its mask
    own = model.state_dict()
    if not include_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing = [k for k in own if k not in state and (include_head or not k.startswith("head."))]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ModelError(
            f"weights in {source} do not fit {model.arch}: "
            + (f"missing {missing[:3]}{'...' if len(missing) > 3 else ''} " if missing else "")
            + (f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
               if unexpected else "")
            + "; is it a checkpoint of this architecture?")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ModelError(f"weights in {source}: layer {k} has shape {tuple(v.shape)}, "
                             f"{model.arch} expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)


def create_model(arch: str, num_classes: int | None = None, *, init: str | os.PathLike = "random",
                 image_size: int | None = None, class_names: list[str] | None = None,
                 preprocessing=None) -> TransferModel:
    """Build a registered architecture, or ``timm:<name>``, ``torchvision:<name>``,
    ``hf:<folder>`` (see :mod:`transferscope.models.sources`).

    Args:
        arch: a name from :func:`list_models`, or ``source:name``.
        num_classes: size of the head; default 1000 (the ImageNet source head).
        init: ``"random"``, ``"imagenet"`` (source weights; the head is kept if
            ``num_classes`` is 1000, else re-initialised) or a path to a ``.safetensors`` /
            ``.pt`` file (loaded with ``weights_only=True``).
        image_size: input size for architectures whose shape depends on it (baseline CNN,
            ViT).
        preprocessing: override of the model's own preprocessing: a
            :class:`~transferscope.data.Normalization` or a dict of its fields (``mean``,
            ``std``, ``interpolation``, ``crop_pct``).
    """
    from transferscope.models.sources import PRETRAINED, create_external, split_name

    if split_name(arch)[0] != "registry":
        model = create_external(arch, None if num_classes is None else int(num_classes),
                                init=init, image_size=image_size)
        if str(init) not in PRETRAINED and str(init) != "random":
            init_weights(model, init)
        model.builder["init"] = str(init)
    else:
        spec = get_spec(arch)
        n = SOURCE_CLASSES if num_classes is None else int(num_classes)
        model = spec.build(n, image_size or spec.default_size)
        model.builder = {"source": "registry", "name": arch, "num_classes": n,
                         "init": str(init), "image_size": image_size or spec.default_size}
        init_weights(model, init)
    model.class_names = class_names
    if preprocessing is not None:
        set_preprocessing(model, preprocessing)
    return model


def set_preprocessing(model: TransferModel, preprocessing) -> None:
    """Override ``model.norm`` (and the builder spec saved with it)."""
    from transferscope.data.transforms import Normalization

    if isinstance(preprocessing, dict):
        unknown = set(preprocessing) - {"mean", "std", "interpolation", "crop_pct"}
        if unknown:
            raise ModelError(f"preprocessing: unknown keys {sorted(unknown)}; use mean, std, "
                             "interpolation, crop_pct")
        try:
            preprocessing = Normalization.from_dict({**model.norm.as_dict(), **preprocessing})
        except (ValueError, TypeError) as exc:
            raise ModelError(f"preprocessing: {exc}") from exc
    model.norm = preprocessing
    if getattr(model, "builder", None) is not None:
        model.builder["preprocessing"] = preprocessing.as_dict()


def init_weights(model: TransferModel, init: str | os.PathLike) -> None:
    """Load ``init`` (``"random"`` = leave as is, ``"imagenet"`` or a file) into ``model``.

    The head is loaded only when its shape fits; otherwise it keeps its current values.
    """
    n = model.num_classes
    if str(init) == "random":
        return
    builder = getattr(model, "builder", None) or {}
    if builder.get("source", "registry") != "registry":
        if str(init) in ("imagenet", "pretrained"):  # the library's own weights
            from transferscope.models.sources import create_external

            ref = create_external(model.arch, None, init=init,
                                  image_size=builder.get("image_size")
                                  if builder.get("fixed_size") else None)
            load_weights(model, ref.state_dict(), source=f"pretrained weights of {model.arch}",
                         include_head=ref.num_classes == n)
            model.builder["init"] = str(init)
            return
        hf = builder["source"] == "hf"  # HF keys live below the HFBackbone's .model
        state = to_uniform_keys(load_state_dict_file(Path(init)),
                                builder["head"].removeprefix("model.") if hf else builder["head"],
                                "backbone.model." if hf else "backbone.")
        head = state.get("head.fc.weight")
        load_weights(model, state, source=str(init),
                     include_head=head is not None and head.shape[0] == n)
        return
    spec = get_spec(model.arch)
    if str(init) in ("imagenet", "pretrained"):
        if spec.imagenet_weights is None:
            raise ModelError(f"no ImageNet weights are known for {model.arch}; use --init "
                             "random or --init PATH")
        state = to_uniform_keys(spec.imagenet_weights(), spec.native_head)
        load_weights(model, state, source=f"ImageNet weights of {model.arch}",
                     include_head=(n == SOURCE_CLASSES))
        return
    path = Path(init)
    state = to_uniform_keys(load_state_dict_file(path), spec.native_head)
    head = state.get("head.fc.weight")
    load_weights(model, state, source=str(path),
                 include_head=head is not None and head.shape[0] == n)

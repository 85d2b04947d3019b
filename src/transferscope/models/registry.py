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
        raise ModelError(f"unknown model {arch!r}; known: {', '.join(list_models())} "
                         "(or wrap your own nn.Module with transferscope.models.wrap_module)")
    return _REGISTRY[arch]


def to_uniform_keys(state: dict[str, torch.Tensor], native_head: str) -> dict[str, torch.Tensor]:
    """Map a native checkpoint's keys (``fc.weight``) to transferscope's (``head.fc.weight``)."""
    if any(k.startswith(("backbone.", "head.")) for k in state):
        return dict(state)
    out = {}
    for k, v in state.items():
        if k.startswith(native_head + "."):
            out["head.fc." + k[len(native_head) + 1:]] = v
        else:
            out["backbone." + k] = v
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
                 image_size: int | None = None, class_names: list[str] | None = None
                 ) -> TransferModel:
    """Build a registered architecture.

    Args:
        arch: a name from :func:`list_models`.
        num_classes: size of the head; default 1000 (the ImageNet source head).
        init: ``"random"``, ``"imagenet"`` (source weights; the head is kept if
            ``num_classes`` is 1000, else re-initialised) or a path to a ``.safetensors`` /
            ``.pt`` file (loaded with ``weights_only=True``).
        image_size: input size for architectures whose shape depends on it (baseline CNN).
    """
    spec = get_spec(arch)
    n = SOURCE_CLASSES if num_classes is None else int(num_classes)
    model = spec.build(n, image_size or spec.default_size)
    model.class_names = class_names
    init_weights(model, init)
    return model


def init_weights(model: TransferModel, init: str | os.PathLike) -> None:
    """Load ``init`` (``"random"`` = leave as is, ``"imagenet"`` or a file) into ``model``.

    The head is loaded only when its shape fits; otherwise it keeps its current values.
    """
    spec = get_spec(model.arch)
    n = model.num_classes
    if str(init) == "random":
        return
    if str(init) == "imagenet":
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

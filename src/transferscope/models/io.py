"""Saving and loading models as safetensors, with architecture metadata and a content hash."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transferscope._io import load_tensors, save_tensors, tensors_sha256
from transferscope.errors import ModelError
from transferscope.models.base import TransferModel
from transferscope.models.registry import create_model, list_models, load_weights

__all__ = ["build_from_spec", "load_model", "load_weights_into", "save_model"]


def save_model(model: TransferModel, path: str | os.PathLike, **extra: str) -> str:
    """Save weights + metadata (arch, classes, input size, preprocessing, sha256, and the
    builder spec that rebuilds the model: source, name, head, ...) atomically; returns the
    hash."""
    state = model.state_dict()
    digest = tensors_sha256(state)
    size = getattr(model.backbone, "image_size", model.default_size)
    builder = getattr(model, "builder", None)
    if builder is not None:
        builder = {**builder, "num_classes": model.num_classes, "image_size": size,
                   "preprocessing": model.norm.as_dict()}
    meta = {"transferscope_arch": model.arch, "num_classes": str(model.num_classes),
            "image_size": str(size), "class_names": json.dumps(model.class_names),
            "preprocessing": json.dumps(model.norm.as_dict()),
            "transferscope_builder": json.dumps(builder, sort_keys=True),
            "sha256": digest, **{k: str(v) for k, v in extra.items()}}
    if builder is None:
        cls = type(model.backbone)
        meta["module_class"] = f"{cls.__module__}.{cls.__qualname__}"
    save_tensors(path, state, meta)
    return digest


def build_from_spec(builder: dict) -> TransferModel:
    """Rebuild a model (random weights) from the builder spec :func:`save_model` stores."""
    from transferscope.data.transforms import Normalization
    from transferscope.models.sources import MODEL_SOURCES, create_external

    source, name = builder.get("source"), builder.get("name")
    n, size = int(builder["num_classes"]), builder.get("image_size")
    if source == "registry":
        model = create_model(name, n, image_size=size)
    elif source in MODEL_SOURCES:
        model = create_external(f"{source}:{name}", n, init="random",
                                image_size=size if builder.get("fixed_size") else None,
                                spec=builder)
    else:
        raise ModelError(f"unknown model source {source!r} in a saved builder spec")
    if builder.get("preprocessing"):
        model.norm = Normalization.from_dict(builder["preprocessing"])
    if size and not builder.get("fixed_size"):
        model.default_size = int(size)
    model.builder = dict(builder)
    return model


def load_model(path: str | os.PathLike, *, verify: bool = True) -> TransferModel:
    """Load a model written by :func:`save_model` (a ``.safetensors`` file, or a training run
    directory holding ``model.safetensors``); a changed byte is reported, never used."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise ModelError(f"{path} is a directory without model.safetensors; give a "
                             "training run directory (finished) or a .safetensors file")
        path = path / "model.safetensors"
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        state, meta = load_tensors(path)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable safetensors model ({exc})") from exc
    if "transferscope_arch" not in meta:
        raise ModelError(f"{path} has no transferscope metadata; load it with "
                         "create_model(arch, init=PATH) instead")
    if verify and meta.get("sha256") and tensors_sha256(state) != meta["sha256"]:
        raise ModelError(f"{path} is corrupt: its content hash does not match the one saved "
                         "with it; re-create it (re-run training or restore a copy)")
    builder = json.loads(meta.get("transferscope_builder", "null"))
    if builder is not None:
        model = build_from_spec(builder)
    elif meta["transferscope_arch"] in list_models():  # files from before builder specs
        model = create_model(meta["transferscope_arch"], int(meta["num_classes"]),
                             image_size=int(meta["image_size"]))
    else:
        raise ModelError(
            f"{path} holds a model wrapped from a custom nn.Module ({meta.get('module_class')}),"
            " which cannot be rebuilt without its Python class; in Python: "
            "load_weights_into(wrap_module(YourNet(...)), path), or save a timm/torchvision/"
            "Hugging Face model, which are rebuilt by name")
    model.class_names = json.loads(meta.get("class_names", "null"))
    load_weights(model, state, source=str(path))
    return model


def load_weights_into(model: TransferModel, path: str | os.PathLike) -> TransferModel:
    """Load the weights of a :func:`save_model` file into an already built ``model``
    (for wrapped custom modules, which only Python can rebuild)."""
    state, meta = load_tensors(path)
    load_weights(model, state, source=str(path))
    model.class_names = json.loads(meta.get("class_names", "null"))
    return model

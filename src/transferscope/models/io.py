"""Saving and loading models as safetensors, with architecture metadata and a content hash."""

from __future__ import annotations

import json
import os
from pathlib import Path

from transferscope._io import load_tensors, save_tensors, tensors_sha256
from transferscope.errors import ModelError
from transferscope.models.base import TransferModel
from transferscope.models.registry import create_model, load_weights


def save_model(model: TransferModel, path: str | os.PathLike, **extra: str) -> str:
    """Save weights + metadata (arch, classes, input size, sha256) atomically; returns the hash."""
    state = model.state_dict()
    digest = tensors_sha256(state)
    size = getattr(model.backbone, "image_size", model.default_size)
    meta = {"transferscope_arch": model.arch, "num_classes": str(model.num_classes),
            "image_size": str(size), "class_names": json.dumps(model.class_names),
            "sha256": digest, **{k: str(v) for k, v in extra.items()}}
    save_tensors(path, state, meta)
    return digest


def load_model(path: str | os.PathLike, *, verify: bool = True) -> TransferModel:
    """Load a model written by :func:`save_model`; a changed byte is reported, never used."""
    path = Path(path)
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
    model = create_model(meta["transferscope_arch"], int(meta["num_classes"]),
                         image_size=int(meta["image_size"]),
                         class_names=json.loads(meta.get("class_names", "null")))
    load_weights(model, state, source=str(path))
    return model

"""Private file plumbing: atomic writes, content hashes, safetensors round trips."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors.torch import load_file, save_file

from transferscope.errors import ModelError


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (mode 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    with _atomic_target(Path(path)) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and values of a tensor dict (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Atomic safetensors save; tensors are made contiguous and de-aliased first."""
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with _atomic_target(Path(path)) as tmp:
        save_file(clean, tmp, metadata=dict(metadata or {}))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file and its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return load_file(str(path)), meta


def load_state_dict_file(path: str | os.PathLike, *, trust_pickle: bool = False
                         ) -> dict[str, torch.Tensor]:
    """Load weights from safetensors, or from a PyTorch checkpoint with ``weights_only=True``.

    A checkpoint that needs arbitrary code to unpickle is refused, never executed, unless the
    caller passes ``trust_pickle=True`` for a file it trusts (``TRANSFERSCOPE_TRUST_PICKLE=1``).
    """
    trust_pickle = trust_pickle or os.environ.get("TRANSFERSCOPE_TRUST_PICKLE") == "1"
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path} (give a .safetensors or .pt/.pth file)")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"{path} is not a valid safetensors file ({exc}); re-save it") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        raise ModelError(
            f"{path} could not be loaded safely (weights_only=True): {str(exc).splitlines()[0]}. "
            "transferscope does not unpickle code; re-save the weights as a plain state_dict or "
            "as safetensors, or - only for a file you trust - set TRANSFERSCOPE_TRUST_PICKLE=1."
        ) from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state_dict of tensors; save model.state_dict() instead")
    return {k.removeprefix("module."): v for k, v in obj.items()}

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
from safetensors.torch import load_file, save

from transferscope.errors import ModelError

__all__ = ["atomic_write_bytes", "atomic_write_json", "file_sha256", "load_checked_state",
           "load_state_dict_file", "load_tensors", "save_checked_state", "save_tensors",
           "tensors_sha256"]


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


def _canonical_header(raw: bytes) -> bytes:
    """The safetensors bytes with their JSON header in sorted key order.

    safetensors writes ``__metadata__`` in hash-map order, which changes from process to
    process; sorted, the same tensors and metadata always give the same file bytes.
    """
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":"))
    header += " " * (-len(header) % 8)  # data stays 8-byte aligned
    return len(header).to_bytes(8, "little") + header.encode() + raw[8 + n:]


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Atomic safetensors save; tensors are made contiguous and de-aliased first, and the
    same tensors and metadata always give byte-identical files."""
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, _canonical_header(save(clean, metadata=dict(metadata or {}))))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file and its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return load_file(str(path)), meta


def _object_sha256(obj: Any, h: "hashlib._Hash | None" = None) -> str:
    """Hash of a nested dict/list of tensors and plain values (optimiser/scheduler state)."""
    h = h or hashlib.sha256()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for k in sorted(obj, key=repr):
            h.update(f"{k!r}:".encode())
            _object_sha256(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}|".encode())
        for v in obj:
            _object_sha256(v, h)
    else:
        h.update(f"V{obj!r}|".encode())
    return h.hexdigest()


def save_checked_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Atomically ``torch.save`` a dict of tensors and plain values with its own content hash.

    For optimiser/scheduler state, which safetensors cannot hold; read it back with
    :func:`load_checked_state` (``weights_only=True``, hash verified).
    """
    state = dict(state)
    with _atomic_target(Path(path)) as tmp:
        torch.save({"state": state, "sha256": _object_sha256(state)}, tmp)


def load_checked_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load a file written by :func:`save_checked_state`: no code is unpickled
    (``weights_only=True``) and a changed byte is reported, never used."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        ok = isinstance(obj, dict) and obj.get("sha256") == _object_sha256(obj.get("state"))
    except Exception as exc:  # unreadable zip, refused pickle
        raise ModelError(f"{path} is unreadable ({str(exc).splitlines()[0]}); delete it to "
                         "resume from scratch, or restore a copy") from exc
    if not ok:
        raise ModelError(f"{path} is corrupt: its content hash does not match the one saved "
                         "with it; delete it to resume from scratch, or restore a copy")
    return obj["state"]


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

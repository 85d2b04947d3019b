"""Content-addressed on-disk cache of tensors (inference outputs), safe against corruption.

A key is the sha256 of everything that determines the result (weights hash, data manifest
digest, transform description, requested layers, code version). Entries are safetensors
files written atomically; each stores the hash of its own tensors and is verified on read,
so a truncated or altered entry is detected, deleted and recomputed - never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from transferscope import __version__, config
from transferscope._io import load_tensors, save_tensors, tensors_sha256

__all__ = ["CACHE_FORMAT", "log", "ResultCache"]

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


class ResultCache:
    """``get(key)`` / ``put(key, tensors)`` over a directory; counts hits and misses.

    Example:
        >>> import tempfile
        >>> c = ResultCache(tempfile.mkdtemp())
        >>> k = c.key(what="demo", n=1)
        >>> c.get(k) is None
        True
        >>> c.put(k, {"x": torch.ones(2)}); c.get(k)["x"].tolist()
        [1.0, 1.0]
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else config.cache_dir() / "inference"
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    @staticmethod
    def key(**parts) -> str:
        payload = {"format": CACHE_FORMAT, "version": __version__, **parts}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        if not self.enabled:
            return None
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            tensors, meta = load_tensors(path)
            ok = meta.get("sha256") == tensors_sha256(tensors)
        except Exception:  # unreadable header, truncated file: treat as corrupt
            ok, tensors = False, None
        if not ok:
            log.warning("cache entry %s is corrupt; recomputing it", path)
            self.corrupt += 1
            self.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.hits += 1
        try:
            os.utime(path)  # last use, for `transferscope cache clear --max-size` (LRU)
        except OSError:
            pass  # a read-only cache only loses the eviction order
        return tensors

    def put(self, key: str, tensors: dict[str, torch.Tensor], **meta: str) -> None:
        if not self.enabled:
            return
        save_tensors(self.path(key), tensors, {"sha256": tensors_sha256(tensors),
                                               **{k: str(v) for k, v in meta.items()}})

    def writing(self, key: str, wait: bool | None = None):
        """Context manager holding entry ``key``'s writer lock (``<entry>.lock`` beside it):
        a second process computing the same entry waits, then reads it (or with ``wait=False``
        / ``TRANSFERSCOPE_NO_WAIT=1`` fails naming the holder)."""
        from transferscope._lock import writer_lock

        return writer_lock(self.path(key), "computing a cache entry", folder=False, wait=wait)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}

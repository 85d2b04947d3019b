"""Partial results of a long forward pass, so that an interrupted pass resumes where it stopped.

A pass over 50,000 images takes 10 to 30 minutes per model on 2 CPU cores, and its cache
entry is written only when the pass ends. With :class:`PartialPass` the batches computed so
far are written as a chunk under ``<cache>/partial/<pass id>/`` every
``TRANSFERSCOPE_CHECKPOINT_SECONDS`` (default 60) and when the pass is interrupted (Ctrl-C,
an exception); the next pass with the same cache keys, number of images and batch size loads
the chunks (each verified by its own hash) and decodes and forwards only the rest. Chunks end
on batch boundaries, so the resumed pass runs the same batches as an uninterrupted one and
its entry is identical; the chunks are deleted once the entry is written. A process killed
outright loses at most the last interval. ``transferscope cache clear`` removes chunks left by
passes that were never resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from typing import Sequence

import torch

from transferscope._io import load_tensors, save_tensors, tensors_sha256

__all__ = ["CHECKPOINT_ENV", "checkpoint_seconds", "DEFAULT_SECONDS", "log", "PartialPass"]

log = logging.getLogger(__name__)
CHECKPOINT_ENV = "TRANSFERSCOPE_CHECKPOINT_SECONDS"
DEFAULT_SECONDS = 60.0
_CHUNK = re.compile(r"(\d{9})-(\d{9})\.safetensors")


def checkpoint_seconds() -> float:
    """Seconds between two saved chunks: ``$TRANSFERSCOPE_CHECKPOINT_SECONDS`` or 60."""
    try:
        return max(0.0, float(os.environ.get(CHECKPOINT_ENV, DEFAULT_SECONDS)))
    except ValueError:
        from transferscope.errors import ConfigError

        raise ConfigError(f"{CHECKPOINT_ENV}={os.environ[CHECKPOINT_ENV]!r} is not a number "
                          "of seconds; unset it or give e.g. 60") from None


class PartialPass:
    """The saved part of one pass: ``resume()`` before it, ``add(batch)`` per batch,
    ``save()`` when interrupted, ``finish()`` once its cache entries are written.

    Args:
        cache: the :class:`~transferscope.engine.ResultCache` the pass writes to (a disabled
            cache saves nothing).
        keys: the cache keys the pass computes (one pass may fill several entries).
        n: images in the whole pass; batch_size: its batch size (both part of the identity:
            chunks of other batches are never mixed in).

    Example:
        >>> import tempfile
        >>> from transferscope.engine import ResultCache
        >>> cache = ResultCache(tempfile.mkdtemp())
        >>> p = PartialPass(cache, ["k"], n=6, batch_size=2, every_s=0)
        >>> p.resume(), p.done
        ({}, 0)
        >>> p.add({"logits": torch.zeros(2, 3)}); p.add({"logits": torch.ones(2, 3)})
        >>> q = PartialPass(cache, ["k"], n=6, batch_size=2)  # the next process
        >>> [t.shape[0] for t in q.resume()["logits"]], q.done
        ([2, 2], 4)
        >>> q.finish(); PartialPass(cache, ["k"], n=6, batch_size=2).resume()
        {}
    """

    def __init__(self, cache, keys: Sequence[str], n: int, batch_size: int,
                 every_s: float | None = None):
        ident = json.dumps([sorted(keys), n, batch_size])
        self.folder = cache.root / "partial" / hashlib.sha256(ident.encode()).hexdigest()[:32]
        self.enabled = bool(cache.enabled)
        self.every_s = checkpoint_seconds() if every_s is None else every_s
        self.done = 0  # images saved, a multiple of batch_size (or n)
        self._pending: list[dict[str, torch.Tensor]] = []
        self._last = time.monotonic()

    def resume(self) -> dict[str, list[torch.Tensor]]:
        """Tensors an earlier pass saved, name -> chunks in data order (empty if none); sets
        :attr:`done`. A damaged chunk, and every chunk after it, is deleted and recomputed."""
        found: dict[str, list[torch.Tensor]] = {}
        if not self.enabled or not self.folder.is_dir():
            return found
        chunks = sorted(p for p in self.folder.iterdir() if _CHUNK.fullmatch(p.name))
        for i, path in enumerate(chunks):
            start, stop = map(int, _CHUNK.fullmatch(path.name).groups())
            try:
                tensors, meta = load_tensors(path)
                ok = (start == self.done and meta.get("sha256") == tensors_sha256(tensors)
                      and all(len(t) == stop - start for t in tensors.values()))
            except Exception:  # noqa: BLE001 - unreadable or truncated: recomputed
                ok = False
            if not ok:
                for later in chunks[i:]:
                    later.unlink(missing_ok=True)
                break
            for name, t in tensors.items():
                found.setdefault(name, []).append(t)
            self.done = stop
        return found

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Record one batch's tensors (name -> ``(b, ...)``); saves a chunk when the interval
        has passed."""
        if not self.enabled:
            return
        self._pending.append({k: v.detach() for k, v in batch.items()})
        if time.monotonic() - self._last >= self.every_s:
            self.save()

    def save(self) -> None:
        """Write the batches recorded since the last chunk (if any) as one chunk."""
        if not self.enabled or not self._pending:
            return
        tensors = {k: torch.cat([b[k].cpu() for b in self._pending])
                   for k in self._pending[0]}
        count = len(next(iter(tensors.values())))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_tensors(self.folder / f"{self.done:09d}-{self.done + count:09d}.safetensors",
                         tensors, {"sha256": tensors_sha256(tensors)})
        except OSError as exc:  # a full or read-only disk costs the resume, never the pass
            log.warning("cannot save the pass so far under %s (%s); an interrupted pass "
                        "will start again from the beginning", self.folder, exc)
            self.enabled = False
            self._pending.clear()
            return
        self.done += count
        self._pending.clear()
        self._last = time.monotonic()

    def finish(self) -> None:
        """The pass's entries are written: its chunks go."""
        self._pending.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

"""Looking after the cache directory: what is in it (size, entries, per kind) and clearing it
by age or down to a size cap, least recently used first.

Entries (under :func:`transferscope.config.cache_dir`):

- ``inference/<xx>/<key>.safetensors``: one :class:`~transferscope.engine.cache.ResultCache`
  entry; its kind is read from its tensor names (``logits`` -> ``predict``, ``features``,
  ``cam`` -> ``gradcam``). Last use = the file's mtime, which ``ResultCache.get`` refreshes
  on every hit.
- ``inference/analyses/<key>/``: a cached analysis (JSON, CSVs, figures); last use = newest
  mtime inside it.
- ``inference/partial/<pass>/``: the saved chunks of an interrupted forward pass
  (:mod:`~transferscope.engine.partial_pass`), kind ``partial-pass``; deleted by the pass that
  resumes it, or by ``clear``.
- ``file-index.json``: the data scanner's (size, mtime) -> sha256 index.

Anything else in the folder is listed as ``other`` and never deleted (the cache directory may
have been pointed at a folder holding other files).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from transferscope import config
from transferscope.errors import ConfigError

__all__ = ["clear", "entries", "Entry", "human", "info", "parse_age", "parse_size"]

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Entry:
    path: Path
    kind: str
    size: int  # bytes
    last_used: float  # epoch seconds

    @property
    def removable(self) -> bool:
        return self.kind != "other"


def parse_size(text: str) -> int:
    """``"500MB"``, ``"2 GB"``, ``"1.5GiB"``, ``"1000"`` -> bytes (SI units: 1 MB = 10^6).

    >>> parse_size("500MB"), parse_size("1.5 GiB"), parse_size("42")
    (500000000, 1610612736, 42)
    """
    return int(_scaled(text, _UNITS, f"size {text!r}: write a number with an optional unit, "
                       "e.g. 500MB, 2GB, 1.5GiB"))


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90min"``, ``"2w"``, ``"45s"`` -> seconds.

    >>> parse_age("30d"), parse_age("1.5h"), parse_age("90min")
    (2592000.0, 5400.0, 5400.0)
    """
    return _scaled(text, _SECONDS, f"age {text!r}: write a number and a unit (s, min, h, d, "
                   "w), e.g. 30d or 12h")


def _scaled(text: str, units: dict[str, float], message: str) -> float:
    """A number times the factor of its unit (case-insensitive; ``""`` only if ``units`` has
    it); ``ConfigError(message)`` otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in units:
        raise ConfigError(message)
    return float(m.group(1)) * units[m.group(2).lower()]


def human(n: float) -> str:
    """Bytes for people (SI units).

    >>> human(0), human(1234), human(5.6e9)
    ('0 B', '1.2 kB', '5.6 GB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _tensor_kind(path: Path) -> str:
    """The kind of a ResultCache entry, from the tensor names in its safetensors header."""
    try:
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            names = set(json.loads(fh.read(min(n, 1 << 24)))) - {"__metadata__"}
    except (OSError, ValueError, struct.error):
        return "damaged"
    for name, kind in (("logits", "predict"), ("features", "features"), ("cam", "gradcam")):
        if name in names:
            return kind
    return "tensors"


def entries(root: str | os.PathLike | None = None) -> list[Entry]:
    """Every entry of the cache at ``root`` (default: the configured cache directory)."""
    root = config.cache_dir(root)
    found: list[Entry] = []
    if not root.is_dir():
        return found
    inference = root / "inference"
    for item in sorted(root.iterdir()):
        if item == inference:
            continue
        st = item.stat()
        if item.name == "file-index.json" and item.is_file():
            found.append(Entry(item, "file-index", st.st_size, st.st_mtime))
        else:
            found.append(Entry(item, "other", _tree_size(item)[0], st.st_mtime))
    if not inference.is_dir():
        return found
    for sub in sorted(inference.iterdir()):
        if sub.name == "analyses" and sub.is_dir():
            for entry in sorted(sub.iterdir()):
                size, newest = _tree_size(entry)
                found.append(Entry(entry, "analysis", size, newest))
        elif sub.name == "partial" and sub.is_dir():  # chunks of interrupted passes
            for entry in sorted(sub.iterdir()):
                size, newest = _tree_size(entry)
                found.append(Entry(entry, "partial-pass", size, newest))
        elif sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name):
            for f in sorted(sub.iterdir()):
                st = f.stat()
                kind = _tensor_kind(f) if f.suffix == ".safetensors" else "partial-write"
                found.append(Entry(f, kind, st.st_size, st.st_mtime))
        else:
            size, newest = _tree_size(sub)
            found.append(Entry(sub, "other", size, newest))
    return found


def _tree_size(path: Path) -> tuple[int, float]:
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime
    size, newest = 0, path.stat().st_mtime
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            size, newest = size + st.st_size, max(newest, st.st_mtime)
    return size, newest


def info(root: str | os.PathLike | None = None) -> dict:
    """``{"root", "bytes", "entries", "kinds": {kind: {"entries", "bytes", "last_used"}}}``."""
    found = entries(root)
    kinds: dict[str, dict] = {}
    for e in found:
        k = kinds.setdefault(e.kind, {"entries": 0, "bytes": 0, "last_used": 0.0})
        k["entries"] += 1
        k["bytes"] += e.size
        k["last_used"] = max(k["last_used"], e.last_used)
    return {"root": str(config.cache_dir(root)), "bytes": sum(e.size for e in found),
            "entries": len(found), "kinds": dict(sorted(kinds.items()))}


def clear(root: str | os.PathLike | None = None, *, older_than: float | None = None,
          max_size: int | None = None, dry_run: bool = False, now: float | None = None
          ) -> dict:
    """Delete cache entries; returns ``{"removed", "bytes_removed", "bytes_left"}``.

    Without options everything the cache wrote goes. ``older_than`` (seconds) removes entries
    not used for that long; ``max_size`` (bytes) then evicts the least recently used until
    the removable entries fit. Entries of kind ``other`` are never touched.
    """
    now = time.time() if now is None else now
    found = [e for e in entries(root) if e.removable]
    if older_than is None and max_size is None:
        doomed = list(found)
    else:
        doomed = [e for e in found if older_than is not None and now - e.last_used > older_than]
        if max_size is not None:
            gone = {id(e) for e in doomed}
            keep = sorted((e for e in found if id(e) not in gone), key=lambda e: e.last_used)
            total = sum(e.size for e in keep)
            for e in keep:  # oldest use first
                if total <= max_size:
                    break
                doomed.append(e)
                total -= e.size
    if not dry_run:
        for e in doomed:
            if e.path.is_dir():
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                e.path.unlink(missing_ok=True)
    removed = sum(e.size for e in doomed)
    return {"removed": len(doomed), "bytes_removed": removed,
            "bytes_left": sum(e.size for e in found) - removed}

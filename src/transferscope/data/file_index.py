"""The index of image files already hashed and checked, so a re-scan decodes nothing old.

A first scan of a folder hashes every file and decodes it once (the validity check of
:func:`~transferscope.data.images.check_image`), on a thread per core; the results are kept
in ``<cache>/file-index.json`` under each file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from transferscope import config
from transferscope._io import atomic_write_json, file_sha256
from transferscope._progress import progress_bar
from transferscope.data.images import CHECK_VERSION, check_image

__all__ = ["FileIndex", "SCAN_THREADS_MIN_FILES"]

SCAN_THREADS_MIN_FILES = 64  # fewer new files: checking them one by one is as quick


class FileIndex:
    """Remembers (size, mtime) -> (sha256, problem) so re-scans hash and decode nothing new.

    The index file carries the version of the image checks and a hash of its own entries: an
    index written by other checks, or altered on disk, is dropped and rebuilt, never trusted.
    """

    def __init__(self) -> None:
        self.path = config.cache_dir() / "file-index.json"
        try:
            stored = json.loads(self.path.read_text())
            entries = stored["entries"]
            ok = (stored.get("checks") == CHECK_VERSION
                  and stored.get("sha256") == self._hash(entries))
        except (OSError, ValueError, KeyError, TypeError):
            entries, ok = {}, False
        self.entries = entries if ok else {}
        self.dirty = False

    @staticmethod
    def _hash(entries: dict) -> str:
        return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()

    def lookup(self, path: Path) -> tuple[str, list, tuple[str, str | None] | None]:
        """``(key, stamp, (sha256, problem) or None)``: None when ``path`` is not indexed with
        its current size and modification time (raises OSError when it cannot be read)."""
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        hit = self.entries.get(key)
        return key, stamp, (hit[1], hit[2]) if hit and hit[0] == stamp else None

    def compute(self, path: Path, key: str, stamp: list) -> tuple[str, str | None]:
        """Hash and validity check of ``path``, stored under ``key`` (thread-safe: one dict
        assignment)."""
        sha = file_sha256(path)
        problem = check_image(path)
        self.entries[key] = [stamp, sha, problem]
        self.dirty = True
        return sha, problem

    def check_many(self, paths: Sequence[Path]) -> list[tuple[tuple | None, OSError | None]]:
        """Hash and validity of every path, in order, as ``((sha256, problem), None)`` or
        ``(None, the OSError)``. Files not indexed yet are hashed and decoded (the validity
        check) on a thread per usable core, up to 8: hashlib and PIL release the GIL, so a
        first scan of 50,000 JPEGs runs on every core."""
        results: list = []
        todo = []  # (position, path, key, stamp) of files not indexed yet
        for path in paths:
            try:
                key, stamp, hit = self.lookup(path)
            except OSError as exc:
                results.append((None, exc))
                continue
            results.append((hit, None))
            if hit is None:
                todo.append((len(results) - 1, path, key, stamp))

        def compute(job):
            _, path, key, stamp = job
            try:
                return self.compute(path, key, stamp), None
            except OSError as exc:
                return None, exc

        threads = min(8, config.usable_cpus())
        pool = ThreadPoolExecutor(threads) if threads > 1 and \
            len(todo) >= SCAN_THREADS_MIN_FILES else None
        done = []
        try:
            with progress_bar(len(todo), f"checking {len(todo)} new image files",
                              None if len(todo) >= SCAN_THREADS_MIN_FILES else False) as advance:
                for result in (pool.map(compute, todo) if pool else map(compute, todo)):
                    done.append(result)
                    advance()
        except BaseException:  # interrupted: what was checked is kept for the next scan
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
            self.save()
            raise
        finally:
            if pool:
                pool.shutdown()
        for (i, *_), result in zip(todo, done):
            results[i] = result
        return results

    def save(self) -> None:
        if self.dirty:
            try:
                atomic_write_json(self.path, {"checks": CHECK_VERSION, "entries": self.entries,
                                              "sha256": self._hash(self.entries)})
            except OSError:
                pass  # a read-only cache only costs speed

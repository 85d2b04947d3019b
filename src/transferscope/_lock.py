"""One writer at a time: an OS file lock on a run directory, output folder or cache entry.

``writer_lock(target)`` holds ``filelock.FileLock`` on ``<target>.lock`` (or on
``<folder>/.transferscope.lock`` for a folder) and writes a small JSON file beside it
(``….lock.info``: pid, host, start time, command line) so that a second process can say who
holds it. The lock is the operating system's (``flock``/``LockFileEx``): it is released when
its holder exits, however it exits, so a lock left by a killed process is recovered without
any clean-up - only its stale ``.info`` file remains, and the next holder overwrites it.

A second process on the same target waits, printing one line naming the holder, or - with
``wait=False`` or ``TRANSFERSCOPE_NO_WAIT=1`` - fails at once with a :class:`LockedError`
naming the holder. Locks are re-entrant within a process (one lock object per file), so a
study that locks its output folder can call the audit that locks it again.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with writer_lock(d, "demo run"):
    ...     with writer_lock(d, "demo run"):  # re-entrant in one process
    ...         holder(d)["pid"] == os.getpid()
    True
    >>> holder(d) is None  # released: no info file left
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from transferscope.errors import TransferscopeError

__all__ = ["describe", "holder", "LOCK_NAME", "lock_path", "LockedError", "NO_WAIT_ENV",
           "writer_lock"]

LOCK_NAME = ".transferscope.lock"
NO_WAIT_ENV = "TRANSFERSCOPE_NO_WAIT"


class LockedError(TransferscopeError):
    """Another process is writing the same run directory, output folder or cache entry."""


def lock_path(target: str | os.PathLike, folder: bool = True) -> Path:
    """The lock file of ``target``: inside it for a ``folder``, ``<file>.lock`` beside a file."""
    target = Path(target)
    return target / LOCK_NAME if folder else target.with_name(target.name + ".lock")


def _info_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".info")


def holder(target: str | os.PathLike, folder: bool = True) -> dict | None:
    """The info the current holder of ``target``'s lock wrote (pid, host, since, what,
    command), or None if there is none (not held, or its holder has not written it yet)."""
    try:
        return json.loads(_info_path(lock_path(target, folder)).read_text())
    except (OSError, ValueError):
        return None


def describe(info: dict | None) -> str:
    """``"pid 123 on host x (since 12:00:01 UTC, transferscope train ...)"``."""
    if not info:
        return "another process (it has not said which yet)"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(info.get("since", 0)))
    return (f"pid {info.get('pid')} on host {info.get('host')} (since {since}, "
            f"{info.get('command') or info.get('what')})")


def _wait_default() -> bool:
    return os.environ.get(NO_WAIT_ENV, "").strip().lower() not in ("1", "true", "yes")


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike, what: str = "", *, folder: bool = True,
                wait: bool | None = None, timeout: float | None = None) -> Iterator[Path]:
    """Hold the writer lock of ``target`` (a folder or a file path) for the ``with`` block.

    Args:
        target: the run directory, output folder or cache entry to protect (parents are
            created); ``folder=False`` for a file (the lock is ``<file>.lock`` beside it).
        what: what the holder is doing, recorded in the info file ("training runs/ft").
        wait: wait for the holder to finish (default), or raise :class:`LockedError` at once;
            default from ``TRANSFERSCOPE_NO_WAIT``.
        timeout: give up waiting after this many seconds (LockedError); None waits forever.

    Raises:
        LockedError: one line naming the holding process (pid, host, since when, command).
    """
    path = lock_path(target, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, is_singleton=True)  # one object per file: re-entrant in-process
    wait = _wait_default() if wait is None else wait
    outer = not lock.is_locked
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = describe(holder(target, folder))
        if not wait:
            raise LockedError(f"{target} is being written by {who}; wait for it to finish or "
                              "write elsewhere") from None
        print(f"waiting for {target}: it is being written by {who}", file=sys.stderr,
              flush=True)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            who = describe(holder(target, folder))
            raise LockedError(f"{target} is still being written by {who} after {timeout:g} s; "
                              "try again later") from None
    info = _info_path(path)
    try:
        if outer:
            info.write_text(json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "what": what, "command": " ".join(sys.argv)[:300]}))
        yield path
    finally:
        if outer:
            info.unlink(missing_ok=True)
        lock.release()

"""Resumable HTTP(S) downloads into a ``.part`` file, with a rich progress bar.

A download that stops early (connection dropped, timeout, Ctrl-C) leaves ``<file>.part``;
the next attempt asks the server for the rest with an HTTP ``Range: bytes=<have>-`` header
and appends when the server answers ``206 Partial Content`` (a server that ignores Range
answers ``200`` and the file starts over). Completeness is checked against the length the
server announced (``Content-Length`` / ``Content-Range``).
"""

from __future__ import annotations

import http.client
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from transferscope import __version__
from transferscope._progress import _console, enabled_by_default
from transferscope.errors import DataError

__all__ = ["CHUNK", "ConnectError", "download"]

CHUNK = 1 << 20


class ConnectError(DataError):
    """The server could not be reached at all (no network, DNS failure, refused)."""

    def __init__(self, message: str, reason: object = None):
        super().__init__(message)
        self.reason = reason


class _Interrupted(Exception):
    """The connection ended before the announced length arrived (resumable)."""


def _total_from(resp, have: int) -> tuple[int, int | None]:
    """(offset the body starts at, total size or None) of a 200/206 response."""
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m:
            raise _Interrupted("206 without a usable Content-Range")
        return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _bar(desc: str, enabled: bool):
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    if not enabled:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=_console,
                    transient=False)


def download(url: str, part: Path, *, desc: str, timeout: float = 20.0, retries: int = 3,
             progress: bool | None = None) -> Path:
    """Fetch ``url`` into ``part`` (resuming what is there); returns ``part`` when complete.

    Raises:
        DataError: the server cannot be reached (nothing downloaded), answers an HTTP error,
            or the transfer keeps breaking off after ``retries`` resumed attempts (the
            partial file is kept, and the message says that re-running resumes it).
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    enabled = enabled_by_default() if progress is None else progress
    last_error: Exception | None = None
    for _attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"transferscope/{__version__}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing after `have`: the part may be complete
                m = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") or "")
                if m and int(m.group(1)) == have:
                    return part
                part.unlink()  # the file changed upstream; start over
                last_error = exc
                continue
            raise DataError(f"{url} answered HTTP {exc.code} ({exc.reason}); check the URL "
                            "or use a mirror with --url") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if have:  # we got somewhere before: a later attempt may resume
                last_error = exc
                continue
            reason = getattr(exc, "reason", exc)
            raise ConnectError(f"could not connect to {url} ({reason})", reason) from exc
        try:
            with resp:
                start, total = _total_from(resp, have)
                if start != have and resp.status == 206:  # not the range asked for
                    part.unlink(missing_ok=True)
                    raise _Interrupted(f"asked for bytes from {have}, got from {start}")
                if start != have:  # a server that ignored Range: write from the start
                    have = 0
                bar = _bar(desc, enabled)
                with open(part, "ab" if have else "wb") as fh:
                    if bar is not None:
                        bar.start()
                        task = bar.add_task(desc, total=total, completed=have)
                    try:
                        while True:
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            fh.write(chunk)
                            if bar is not None:
                                bar.update(task, advance=len(chunk))
                    finally:
                        if bar is not None:
                            bar.stop()
                size = part.stat().st_size
                if total is not None and size < total:
                    raise _Interrupted(f"got {size} of {total} bytes")
                if total is not None and size > total:
                    part.unlink()
                    raise _Interrupted(f"got {size} bytes, more than the {total} announced")
                return part
        except (_Interrupted, http.client.IncompleteRead, http.client.HTTPException,
                ConnectionError, socket.timeout, TimeoutError, OSError) as exc:
            last_error = exc
            continue
    size = part.stat().st_size if part.exists() else 0
    raise DataError(f"the download from {url} broke off ({last_error}); {size} bytes are kept "
                    f"in {part} - run the same command again to resume")

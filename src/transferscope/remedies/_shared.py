"""Pieces the remedies share: the split of source images between training and evaluation,
the source-only classes F of a target set, a bank of background images, and pasting."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transferscope.analyses.lingering_features import source_only, source_votes
from transferscope.data.folder import source_images
from transferscope.data.image_set import ImageSet
from transferscope.data.transforms import Normalization, eval_transform
from transferscope.engine.inference import predict
from transferscope.errors import ConfigError
from transferscope.models.base import TransferModel
from transferscope.models.registry import create_model

__all__ = ["BackgroundBank", "load_backgrounds", "paste", "source_model", "source_only_classes",
           "split_source_classes"]


def split_source_classes(num_classes: int = 1000, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded halves of the source classes: ``(train, eval)``. Remedies draw source images
    only from ``train``; evaluation composites only from ``eval``, so the two never share an
    image (one image per class in ``imagenet-samples``)."""
    perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    half = num_classes // 2
    return sorted(perm[:half]), sorted(perm[half:])


def source_model(arch: str, init: str = "imagenet") -> TransferModel:
    """M^s: ``arch`` with its source weights and source head."""
    return create_model(arch, init=init).eval()


def source_only_classes(m_s: TransferModel, target: ImageSet, image_size: int, k: int = 5,
                        v_lo: int = 0) -> list[int]:
    """Paper 001, eq. 1-2: source classes in no top-``k`` prediction of M^s on ``target``."""
    logits = predict(m_s, target, image_size=image_size).logits
    return torch.nonzero(source_only(source_votes(logits, k), v_lo)).flatten().tolist()


def load_backgrounds(source: str, classes: list[int], norm: Normalization, size: int,
                     data_root=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of source ``classes`` as ``(N, 3, size, size)`` normalised tensors + labels."""
    data = source_images(source, data_root=data_root)
    keep = set(classes)
    ids = [i for i, s in enumerate(data.samples) if s.label in keep]
    if not ids:
        raise ConfigError(f"no image of the {len(classes)} chosen source classes in {data.root}; "
                          "pass source images that cover them")
    data = data.subset(ids).with_transform(eval_transform(norm, size))
    xs, ys = zip(*(data[i] for i in range(len(data))))
    return torch.stack(xs), torch.tensor(ys)


def paste(backgrounds: torch.Tensor, overlays: torch.Tensor, side_range: tuple[float, float],
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste each overlay, shrunk to a random side in ``side_range`` (fraction of the image),
    at a random place on its background: ``(N, 3, S, S) x2 -> composites, boxes (N, 4)``
    (boxes as ``x0, y0, x1, y1`` pixels)."""
    n, _, h, w = backgrounds.shape
    out, boxes = backgrounds.clone(), torch.zeros(n, 4, dtype=torch.long)
    lo, hi = side_range
    for i in range(n):
        frac = lo + (hi - lo) * float(torch.rand((), generator=generator))
        side = max(1, min(h, w, round(frac * min(h, w))))
        y0 = int(torch.randint(0, h - side + 1, (), generator=generator))
        x0 = int(torch.randint(0, w - side + 1, (), generator=generator))
        small = F.interpolate(overlays[i:i + 1], size=(side, side), mode="bilinear",
                              antialias=True, align_corners=False)
        out[i, :, y0:y0 + side, x0:x0 + side] = small[0]
        boxes[i] = torch.tensor([x0, y0, x0 + side, y0 + side])
    return out, boxes


class BackgroundBank:
    """Source images of source-only classes to paste target images on, drawn at random."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def composites(self, overlays: torch.Tensor, side_range: tuple[float, float],
                   generator: torch.Generator) -> torch.Tensor:
        """One composite per overlay on a random background (flipped at random)."""
        pick = torch.randint(0, len(self.images), (len(overlays),), generator=generator)
        bg = self.images[pick]
        flip = torch.rand(len(overlays), generator=generator) < 0.5
        bg[flip] = bg[flip].flip(-1)
        return paste(bg, overlays, side_range, generator)[0]

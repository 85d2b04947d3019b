"""Composite augmentation (paper 001, section 5.1, interference-aware fine-tuning): paste a
``fraction`` of each batch's target images on images of source-only classes (label: the
pasted target class), so the model learns that those backgrounds carry no target evidence."""

from __future__ import annotations

import torch

from transferscope.remedies._base import Remedy

__all__ = ["CompositeAugmentation"]


class CompositeAugmentation(Remedy):
    """Replace ``fraction`` of each batch by composites; overlay side drawn in ``side``."""

    name = "composite-augmentation"

    def __init__(self, fraction: float = 0.5, side: tuple[float, float] = (0.3, 0.5), **kw):
        super().__init__(fraction=float(fraction), side=[float(s) for s in side], **kw)
        self.bank = None

    def setup(self, model, train_set, image_size, fresh):
        if not fresh and self.bank is None:
            self.bank = self.background_bank(model, train_set, image_size)

    def batch(self, x, y, generator):
        m = round(self.fraction * len(x))
        if m == 0:
            return x, y
        idx = torch.randperm(len(x), generator=generator)[:m]
        x = x.clone()
        x[idx] = self.bank.composites(x[idx], tuple(self.side), generator)
        return x, y

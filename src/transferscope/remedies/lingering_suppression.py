"""Lingering-feature suppression: penalise what the source head still sees through the
fine-tuned backbone (M^st, paper 001 eq. 3) on composites of target images over source-only
backgrounds: ``loss = CE + weight * mean_x sum_{c in C} softmax(h_s(f(x)))_c``.

The lingering set L is only known after fine-tuning; by default C = F, the source-only
classes (eq. 2) from which L is drawn; pass ``classes`` (e.g. an audit's lingering list) to
penalise L itself.
"""

from __future__ import annotations

import copy

import torch

from transferscope.remedies._base import Remedy

__all__ = ["LingeringSuppression"]


class LingeringSuppression(Remedy):
    """Source-head probability mass on classes C, on ``fraction`` x batch composites."""

    name = "lingering-suppression"

    def __init__(self, weight: float = 1.0, fraction: float = 0.5,
                 side: tuple[float, float] = (0.3, 0.5), classes: list[int] | None = None,
                 **kw):
        super().__init__(weight=float(weight), fraction=float(fraction),
                         side=[float(s) for s in side], classes=classes, **kw)
        self.bank = None

    def setup(self, model, train_set, image_size, fresh):
        if fresh or self.bank is not None:
            return
        self.bank = self.background_bank(model, train_set, image_size)
        head = copy.deepcopy(self.source_model(model.arch).head).requires_grad_(False)
        self.head = head.eval()
        chosen = self.classes if self.classes is not None else \
            self.source_only(model, train_set, image_size)
        self.penalised = torch.tensor(sorted(chosen), dtype=torch.long)
        self.report["penalised_classes"] = len(self.penalised)

    def loss(self, model, x, y, features, logits, generator):
        m = max(1, round(self.fraction * len(x)))
        comp = self.bank.composites(x[:m].detach(), tuple(self.side), generator)
        probs = self.head(model.forward_features(comp)).softmax(1)
        return self.weight * probs[:, self.penalised].sum(1).mean()

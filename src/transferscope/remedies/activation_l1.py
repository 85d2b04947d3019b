"""Activation sparsity (paper 001, appendix B): an L1 penalty on the penultimate features,
``loss = CE + weight * mean |f(x)|``, so the network keeps as few features active as it can."""

from __future__ import annotations

from transferscope.remedies._base import Remedy

__all__ = ["ActivationL1"]


class ActivationL1(Remedy):
    """L1 on the ``(N, D)`` penultimate features of each training batch."""

    name = "activation-l1"

    def __init__(self, weight: float = 0.5, **kw):
        super().__init__(weight=float(weight), **kw)

    def loss(self, model, x, y, features, logits, generator):
        return self.weight * features.abs().mean()

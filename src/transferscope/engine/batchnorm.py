"""BatchNorm statistics: re-estimating running means and variances ("precise BN").

Shared by training (EfficientNet-Lite's BatchNorm momentum is TensorFlow's 0.01, so running
statistics lag far behind the weights of a network trained from random init: the model
trains to 85 % but evaluates at chance until they are re-estimated) and by the weight-space
analyses (paper 003's interpolated models need their own statistics).
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import torch
from torch import nn


def bn_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """BatchNorm layers that keep running statistics, by name."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


@contextlib.contextmanager
def bn_train_mode(model: nn.Module):
    """Eval mode except BatchNorm layers, which run in train mode with momentum=None."""
    modes = {m: m.training for m in model.modules()}
    bns = bn_layers(model)
    momenta = {n: m.momentum for n, m in bns.items()}
    model.eval()
    for m in bns.values():
        m.train()
        m.momentum = None  # cumulative moving average over the re-estimation passes
    try:
        yield bns
    finally:
        for n, m in bns.items():
            m.momentum = momenta[n]
        for m, mode in modes.items():
            m.training = mode


def split_batch(batch, device=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` from a loader item that is ``x`` or ``(x, y, ...)``, moved to ``device``."""
    x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
    if device is not None:
        x = x.to(device)
        y = y.to(device) if y is not None else None
    return x, y


def reestimate_bn(model: nn.Module, loader: Iterable, device=None,
                  channels_last: bool = False) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them over ``loader``
    (equal-weight average over batches, other layers in eval mode)."""
    with bn_train_mode(model) as bns, torch.no_grad():
        if not bns:
            return
        for m in bns.values():
            m.reset_running_stats()
        for batch in loader:
            x = split_batch(batch, device)[0]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)

"""One forward pass run only for what forward hooks record (layer sizes, module pairs)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from transferscope.engine.modes import eval_mode

__all__ = ["run_hooked"]


def run_hooked(model: nn.Module, x: torch.Tensor, handles: Iterable = ()) -> torch.Tensor:
    """``model(x)`` in eval mode without gradients; the model's mode is restored and the hook
    ``handles`` removed afterwards, whatever happens. Returns the output."""
    try:
        with eval_mode(model), torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()

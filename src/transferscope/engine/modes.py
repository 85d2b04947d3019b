"""One way to run models in eval mode for a while and give them back as they were."""

from __future__ import annotations

import contextlib

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(*models: nn.Module):
    """Eval mode inside the block; the train/eval mode of every model *and each of its
    sub-modules* is restored on exit, also on errors (a fine-tuning loop that keeps some
    BatchNorm layers in eval mode gets them back that way).

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(1, 1).train()
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    modes = [(sub, sub.training) for m in models for sub in m.modules()]
    try:
        for m in models:
            m.eval()
        yield models[0] if len(models) == 1 else models
    finally:
        for sub, was in modes:
            sub.training = was

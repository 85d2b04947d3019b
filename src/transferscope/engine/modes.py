"""One way to run models in eval mode for a while and give them back as they were."""

from __future__ import annotations

import contextlib

from torch import nn


@contextlib.contextmanager
def eval_mode(*models: nn.Module):
    """Eval mode inside the block; every model's train/eval mode is restored on exit, also on
    errors (``model.train(was)``, as ``nn.Module.train`` sets it: for all sub-modules).

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(1, 1).train()
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    modes = [(m, m.training) for m in models]
    try:
        for m in models:
            m.eval()
        yield models[0] if len(models) == 1 else models
    finally:
        for m, was in modes:
            m.train(was)

"""Remedies for lingering source memories (paper 001, appendix B and section 5.1), as
fine-tuning variants: each is a :class:`~transferscope.engine.TrainingHook` with JSON
settings that the run records in its ``config.json``.

Example:
    >>> from transferscope.remedies import make_remedy
    >>> make_remedy("activation-l1", weight=0.1).settings["kind"]
    'activation-l1'
"""

from __future__ import annotations

import inspect

from transferscope.remedies._base import Remedy, fine_tune
from transferscope.remedies.activation_l1 import ActivationL1
from transferscope.remedies.composite_augmentation import CompositeAugmentation
from transferscope.remedies.lingering_suppression import LingeringSuppression
from transferscope.remedies.pruning import Pruning
from transferscope.errors import ConfigError

REMEDIES: dict[str, type[Remedy]] = {r.name: r for r in (
    CompositeAugmentation, ActivationL1, LingeringSuppression, Pruning)}


def make_remedy(kind: str, **params) -> Remedy:
    """The remedy ``kind`` (see :data:`REMEDIES`) with ``params``."""
    if kind not in REMEDIES:
        raise ConfigError(f"unknown remedy {kind!r}; known: {', '.join(REMEDIES)}")
    known = {n for cls in (REMEDIES[kind], Remedy)
             for n, p in inspect.signature(cls.__init__).parameters.items()
             if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"remedy {kind!r} has no setting {', '.join(map(repr, unknown))}; "
                          f"its settings: {', '.join(sorted(known - {'data_root'}))}")
    return REMEDIES[kind](**params)


__all__ = ["REMEDIES", "Remedy", "make_remedy", "fine_tune", "ActivationL1",
           "CompositeAugmentation", "LingeringSuppression", "Pruning"]

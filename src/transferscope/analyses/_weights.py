"""Weight-space helpers shared by the analyses that work on state dicts (barriers, basins,
criticality, transferability, distances, layer gradients): states, parameter groups, shape
checks and seeding. Path evaluation (``combine``, ``interpolate``, ``evaluate_states``) lives
in :mod:`.barriers` and is imported from there.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from transferscope.errors import ModelError
from transferscope.models.base import TransferModel

StateDict = Mapping[str, torch.Tensor]
#: one group as used here: (layer name, parameter names, is_classifier)
ParamGroup = tuple[str, Sequence[str], bool]


def state_of(obj) -> StateDict:
    """The state dict of a module, or ``obj`` itself when it already is one."""
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def seed_of(*parts: int) -> int:
    """One 32-bit seed from several integers (order matters, signs do not).

    >>> seed_of(1, 2) == seed_of(1, 2) != seed_of(2, 1)
    True
    """
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


def parameter_groups(model: TransferModel, include_classifier: bool = True) -> list[ParamGroup]:
    """``(name, parameter names, is_classifier)`` of every layer group of ``model``, in order.

    Example:
        >>> from transferscope.models import create_model
        >>> parameter_groups(create_model("baseline_cnn", 2, image_size=32))[0]
        ('conv1', ['backbone.conv1.weight', 'backbone.conv1.bias'], False)
    """
    return [(g.name, g.parameter_names(model), g.is_classifier)
            for g in model.layer_groups(include_classifier)]


def check_state_dicts(dicts: Mapping[str, StateDict], names: Sequence[str],
                      layer: str | None = None) -> None:
    """Raise :class:`ModelError` unless every dict has every name with one common shape.

    ``dicts`` maps a label (``"theta_A"``) to a state dict; the first dict is the reference
    for shapes. The message names the parameter, its layer and the dict at fault.
    """
    where = f" (layer {layer!r})" if layer else ""
    ref_label, ref = next(iter(dicts.items()))
    for name in names:
        for label, sd in dicts.items():
            if name not in sd:
                raise ModelError(f"parameter {name!r}{where} is missing from {label}; all state "
                                 "dicts must come from the same architecture and head size")
        shape = tuple(ref[name].shape)
        for label, sd in dicts.items():
            if tuple(sd[name].shape) != shape:
                raise ModelError(f"parameter {name!r}{where} has shape {tuple(sd[name].shape)} in "
                                 f"{label} but {shape} in {ref_label}; give state dicts of the "
                                 "same architecture and number of classes")

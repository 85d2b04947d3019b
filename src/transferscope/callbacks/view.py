"""A :class:`~transferscope.models.TransferModel` view of the model a training loop holds,
sharing its parameters (never a copy: the view follows the training).

- a TransferModel is used as it is;
- a module holding exactly one TransferModel (a LightningModule with ``self.model =
  create_model(...)``) gives that one;
- any other classifier (timm, torchvision, Hugging Face, your own) is viewed through its final
  ``nn.Linear``: the backbone runs the whole module and returns the input of that layer (read
  by a forward pre-hook that lives for one call), the head *is* that layer. The module is not
  changed (:func:`~transferscope.models.wrap_module` copies; this must not).
"""

from __future__ import annotations

import contextlib

from torch import nn

from transferscope.data.transforms import IMAGENET_NORM
from transferscope.errors import ModelError
from transferscope.models.base import ClassifierHead, LayerGroup, TransferModel
from transferscope.models.groups import auto_groups
from transferscope.models.sources import find_head

__all__ = ["as_transfer_model"]


class _HeadInput(nn.Module):
    """Runs ``net`` and returns what its final linear layer received, ``(N, D)``."""

    def __init__(self, net: nn.Module, head: nn.Linear, hf: bool):
        super().__init__()
        self.net, self._hf = net, hf
        object.__setattr__(self, "_head", head)  # not a sub-module: no second parameter copy

    def forward(self, x):
        got = []
        handle = self._head.register_forward_pre_hook(lambda _m, inp: got.append(inp[0]))
        try:
            self.net(pixel_values=x) if self._hf else self.net(x)
        finally:
            handle.remove()
        if len(got) != 1:
            raise ModelError(f"{type(self.net).__name__}: its final nn.Linear ran {len(got)} "
                             "times in one forward pass; pass a TransferModel instead")
        return got[0]


def _one_transfer_model(module: nn.Module) -> TransferModel | None:
    found = [m for m in module.modules() if isinstance(m, TransferModel)]
    return found[0] if len(found) >= 1 and all(f in found[0].modules() for f in found) else None


def as_transfer_model(model: nn.Module, head: str | None = None) -> TransferModel:
    """A TransferModel sharing ``model``'s parameters (see the module docstring).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> view = as_transfer_model(net)
        >>> x = torch.randn(2, 3, 8, 8)
        >>> bool(torch.equal(view(x), net(x))), view.num_features, view.num_classes
        (True, 4, 2)
        >>> view.get_classifier().fc is net[3]
        True
    """
    if isinstance(model, TransferModel):
        return model
    inner = _one_transfer_model(model)
    if inner is not None:
        return inner
    hf = any(c.__name__ == "PreTrainedModel" for c in type(model).__mro__)
    if head is None:
        hint = "classifier" if hf else (getattr(model, "pretrained_cfg", None) or {}).get(
            "classifier")
        with contextlib.suppress(ModelError):
            head = find_head(model, hint if isinstance(hint, str) else None)
    linear = dict(model.named_modules()).get(head) if head else None
    if not isinstance(linear, nn.Linear):
        raise ModelError(f"{type(model).__name__}: cannot find its final nn.Linear; pass a "
                         "TransferModel (transferscope.models.wrap_module) or head= its path")
    cls = ClassifierHead(linear.in_features, linear.out_features)
    cls.fc = linear  # shared
    backbone = _HeadInput(model, linear, hf)
    path = f"backbone.net.{head}"
    groups = [g for g in auto_groups(model, prefix="backbone.net")  # blocks without the head
              if not any(path == m or path.startswith(m + ".") for m in g.modules)]
    groups.append(LayerGroup("classifier", ("head",), is_classifier=True))
    norm = IMAGENET_NORM
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("mean") and cfg.get("std"):
        from transferscope.data.transforms import Normalization

        norm = Normalization(tuple(cfg["mean"]), tuple(cfg["std"]))
    view = TransferModel(backbone, cls, arch=f"view:{type(model).__name__}", norm=norm,
                         groups=groups, default_size=224)
    # the head first, so named_parameters() names the shared linear layer "head.fc.*" (and
    # drops its second name under the backbone), as for every other TransferModel
    view._modules = {"head": view._modules["head"], "backbone": view._modules["backbone"]}
    return view

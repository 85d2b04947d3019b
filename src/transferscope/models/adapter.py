"""Bring your own ``nn.Module``: wrap it into a :class:`TransferModel`."""

from __future__ import annotations

from torch import nn

from transferscope.data.transforms import IMAGENET_NORM, Normalization
from transferscope.errors import ModelError
from transferscope.models.base import ClassifierHead, LayerGroup, TransferModel


def wrap_module(module: nn.Module, head: str = "fc", *, arch: str = "custom",
                norm: Normalization = IMAGENET_NORM, groups: list[str] | None = None,
                default_size: int = 224) -> TransferModel:
    """Wrap a classifier whose last layer is the ``nn.Linear`` at dotted path ``head``.

    The linear layer becomes the :class:`ClassifierHead` (weights kept) and is replaced by
    ``nn.Identity`` inside ``module``, so ``module(x)`` must then return ``(N, D)`` features
    (true for torchvision/timm classifiers). ``groups`` lists dotted sub-module paths of
    ``module`` for layer-wise analyses; by default every direct child with parameters.

    Example:
        >>> import torchvision
        >>> m = wrap_module(torchvision.models.mobilenet_v3_small(), head="classifier.3")
        >>> m.num_classes
        1000
    """
    try:
        linear = module.get_submodule(head)
    except AttributeError as exc:
        raise ModelError(f"wrap_module: {type(module).__name__} has no sub-module {head!r}; "
                         "pass head= the dotted path of its final nn.Linear") from exc
    if not isinstance(linear, nn.Linear):
        raise ModelError(f"wrap_module: {head!r} is a {type(linear).__name__}, not nn.Linear")
    parent_path, _, leaf = head.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, leaf, nn.Identity())
    new_head = ClassifierHead(linear.in_features, linear.out_features)
    new_head.fc = linear
    if groups is None:
        groups = [n for n, child in module.named_children()
                  if any(True for _ in child.parameters())]
    layer_groups = [LayerGroup(g, (f"backbone.{g}",)) for g in groups]
    layer_groups.append(LayerGroup("classifier", ("head",), is_classifier=True))
    return TransferModel(module, new_head, arch=arch, norm=norm, groups=layer_groups,
                         default_size=default_size)

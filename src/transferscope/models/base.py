"""The one interface every architecture answers (after timm's ``forward_features`` /
``forward_head`` / ``get_classifier`` / ``reset_classifier``).

A :class:`TransferModel` is a *backbone* (image -> feature vector) and a *head*
(:class:`ClassifierHead`: optional dropout + one linear layer). Splitting there is what the
papers need: paper 001's M^st is the fine-tuned backbone with the source head (:func:`compose`),
and layer-wise analyses walk :meth:`TransferModel.layer_groups`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transferscope._io import tensors_sha256
from transferscope.data.transforms import Normalization
from transferscope.errors import ModelError

__all__ = ["ClassifierHead", "compose", "LayerGroup", "resolve_layers", "TransferModel"]


class ClassifierHead(nn.Module):
    """``fc(dropout(features))``; shapes ``(N, D) -> (N, C)``."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(features))


@dataclass(frozen=True)
class LayerGroup:
    """A named unit for layer-wise analyses (a conv + its norm, a residual block, the head).

    ``modules`` are dotted paths inside the :class:`TransferModel`; the group's parameters are
    all parameters below them (a path may also name a parameter held directly by a module,
    like a ViT's ``cls_token``), its activation is the output of the last one (a module).
    """

    name: str
    modules: tuple[str, ...]
    is_classifier: bool = False

    def parameter_names(self, model: nn.Module) -> list[str]:
        names = []
        for path in self.modules:
            prefix = path + "."
            names += [n for n, _ in model.named_parameters()
                      if n.startswith(prefix) or n == path]
        return names

    @property
    def output_module(self) -> str:
        return self.modules[-1]


def resolve_layers(model: nn.Module, layers) -> dict[str, nn.Module]:
    """``{name: module}`` for layer-group names (the group's output module, for models with
    ``layer_groups``) or sub-module paths of any ``nn.Module``.

    Raises:
        ConfigError: a name is neither; the message lists the layer groups.
    """
    from transferscope.errors import ConfigError

    groups = ({g.name: g.output_module for g in model.layer_groups()}
              if hasattr(model, "layer_groups") else {})
    what = getattr(model, "arch", type(model).__name__)
    out = {}
    for name in layers:
        try:
            out[name] = model.get_submodule(groups.get(name, name))
        except AttributeError:
            raise ConfigError(f"layer {name!r} is neither a layer group of {what} "
                              f"({', '.join(groups) or 'none'}) nor a sub-module path") from None
    return out


class TransferModel(nn.Module):
    """Backbone + classifier head with the uniform transferscope interface.

    Args:
        backbone: maps ``(N, 3, H, W)`` images to ``(N, D)`` features.
        head: a :class:`ClassifierHead` mapping ``(N, D) -> (N, C)``.
        arch: registry name (``"resnet18"``) or ``"custom"``.
        norm: input normalisation the weights expect.
        groups: ordered layer groups, input to output, head last.
        default_size: the input size the architecture is usually run at.

    Example:
        >>> from transferscope.models import create_model
        >>> m = create_model("baseline_cnn", num_classes=2, image_size=32)
        >>> m(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 2])
    """

    builder: dict | None = None  # how to rebuild it by name (saved with its weights)
    num_prefix_tokens: int = 0  # token models: class/register/distillation tokens first

    def __init__(self, backbone: nn.Module, head: ClassifierHead, *, arch: str,
                 norm: Normalization, groups: list[LayerGroup], default_size: int = 224,
                 class_names: list[str] | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.arch = arch
        self.norm = norm
        self._groups = list(groups)
        self.default_size = default_size
        self.class_names = class_names

    # -- timm-style interface -------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W) -> (N, D)`` penultimate features (pruned channels are zero)."""
        features = self.backbone(x)
        mask = getattr(self, "feature_mask", None)
        return features if mask is None else features * mask

    def prune_features(self, channels) -> None:
        """Remove penultimate feature ``channels`` for good: a persistent ``feature_mask``
        buffer (saved with the weights, part of :meth:`weights_hash`) zeroes them."""
        mask = getattr(self, "feature_mask", None)
        mask = torch.ones(self.num_features) if mask is None else mask.clone()
        mask[torch.as_tensor(channels, dtype=torch.long)] = 0.0
        self.register_buffer("feature_mask", mask)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if "feature_mask" in state_dict and getattr(self, "feature_mask", None) is None:
            self.register_buffer("feature_mask", torch.ones(self.num_features))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, D) -> (N, C)`` logits."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> ClassifierHead:
        return self.head

    def reset_classifier(self, num_classes: int, class_names: list[str] | None = None) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs."""
        drop = self.head.drop.p if isinstance(self.head.drop, nn.Dropout) else 0.0
        self.head = ClassifierHead(self.num_features, num_classes, drop)
        self.class_names = class_names

    @property
    def num_features(self) -> int:
        return self.head.fc.in_features

    @property
    def num_classes(self) -> int:
        return self.head.fc.out_features

    @property
    def fixed_size(self) -> int | None:
        """Input side the architecture requires (baseline CNN), or None if any size works."""
        return getattr(self.backbone, "image_size", None)

    def input_size(self, preferred: int) -> int:
        """``preferred`` unless the architecture is built for one fixed size."""
        return self.fixed_size or preferred

    def layer_groups(self, include_classifier: bool = True) -> list[LayerGroup]:
        """Ordered layer groups, input to output; the classifier head is last."""
        return [g for g in self._groups if include_classifier or not g.is_classifier]

    def resolve_layers(self, layers) -> dict[str, nn.Module]:
        """Modules by name: a layer-group name (its output module) or a sub-module path."""
        return resolve_layers(self, layers)

    def weights_hash(self) -> str:
        """sha256 of every parameter and buffer (names, shapes, dtypes, values)."""
        return tensors_sha256(self.state_dict())

    def backbone_hash(self) -> str:
        """sha256 of what :meth:`forward_features` depends on: every tensor but the head's.

        A fine-tuned model and its M^st (``compose(fine_tuned, source)``) share it, so
        :func:`~transferscope.engine.predict` runs their common backbone once.
        """
        return tensors_sha256({k: v for k, v in self.state_dict().items()
                               if not k.startswith("head.")})

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_features={self.num_features}, num_classes={self.num_classes}"


def compose(backbone_from: TransferModel, head_from: TransferModel) -> TransferModel:
    """Paper 001's M^st: the backbone of one model with the head of another (shared, not copied).

    Example: ``m_st = compose(fine_tuned, source)`` predicts source classes from the fine-tuned
    features.
    """
    if backbone_from.num_features != head_from.num_features:
        raise ModelError(
            f"cannot put the head of {head_from.arch} ({head_from.num_features} input features) "
            f"on the backbone of {backbone_from.arch} ({backbone_from.num_features} features); "
            "both models must have the same architecture")
    groups = backbone_from.layer_groups(include_classifier=False) + [
        g for g in head_from.layer_groups() if g.is_classifier]
    m_st = TransferModel(backbone_from.backbone, head_from.head, arch=backbone_from.arch,
                         norm=backbone_from.norm, groups=groups,
                         default_size=backbone_from.default_size,
                         class_names=head_from.class_names)
    if getattr(backbone_from, "feature_mask", None) is not None:
        m_st.register_buffer("feature_mask", backbone_from.feature_mask)
    if backbone_from.builder is not None:
        m_st.builder = {**backbone_from.builder, "num_classes": head_from.num_classes}
    m_st.num_prefix_tokens = backbone_from.num_prefix_tokens
    return m_st

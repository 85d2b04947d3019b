"""Per-model preprocessing: resizing, cropping and normalisation, with a stable description."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` on pixels scaled to [0, 1].

    EfficientNet-Lite's ``(x - 127) / 128`` on 0-255 pixels is ``mean=127/255, std=128/255``.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def describe(self) -> str:
        return f"mean={[round(m, 6) for m in self.mean]},std={[round(s, 6) for s in self.std]}"


IMAGENET_NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LITE_NORM = Normalization((127 / 255,) * 3, (128 / 255,) * 3)
HALF_NORM = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

CROP_FRACTION = 0.875  # resize shorter side to size/0.875 then centre-crop, as torchvision/timm


def eval_transform(norm: Normalization, size: int) -> v2.Compose:
    """Deterministic evaluation transform: resize, centre crop, to float tensor, normalise."""
    return v2.Compose([
        v2.PILToTensor(),
        v2.Resize(round(size / CROP_FRACTION), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(norm.mean, norm.std),
    ])


def train_transform(norm: Normalization, size: int) -> v2.Compose:
    """Training augmentation: random resized crop and horizontal flip (papers 000, 002, 003)."""
    return v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(norm.mean, norm.std),
    ])


def describe_transform(t) -> str:
    """A string that changes whenever the transform's behaviour changes (used in cache keys)."""
    return repr(t).replace("\n", "").replace(" ", "")

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


class DraftDecode(v2.Compose):
    """:func:`eval_transform` whose input may be decoded at reduced scale (JPEG draft mode):
    :attr:`decode_min_side` is the shorter side its resize produces, which the decoded image
    keeps (``ImageSet`` passes it to the decoder). Its own ``repr``, so it has its own cache
    keys: the pixels differ slightly from a full decode followed by the same resize."""

    def __init__(self, transforms, decode_min_side: int):
        super().__init__(transforms)
        self.decode_min_side = decode_min_side


def eval_transform(norm: Normalization, size: int, draft: bool = False) -> v2.Compose:
    """Deterministic evaluation transform: resize, centre crop, to float tensor, normalise.

    ``draft=True``: a :class:`DraftDecode` - large JPEGs are decoded at 1/2-1/8 scale, never
    below the resize target (about 1.5-2x faster decoding of ImageNet-sized photos at 128 px;
    inputs within a few grey levels of the full decode, see tests/test_loading.py).
    """
    steps = [
        v2.PILToTensor(),
        v2.Resize(round(size / CROP_FRACTION), antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(norm.mean, norm.std),
    ]
    return DraftDecode(steps, round(size / CROP_FRACTION)) if draft else v2.Compose(steps)


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

"""Per-model preprocessing: resizing, cropping and normalisation, with a stable description."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

__all__ = ["CROP_FRACTION", "describe_transform", "DraftDecode", "eval_transform", "HALF_NORM",
           "IMAGENET_NORM", "INTERPOLATIONS", "LITE_NORM", "Normalization", "takes_uint8_tensor",
           "train_transform"]


CROP_FRACTION = 0.875  # resize shorter side to size/0.875 then centre-crop, as torchvision/timm
INTERPOLATIONS = {"bilinear": v2.InterpolationMode.BILINEAR,
                  "bicubic": v2.InterpolationMode.BICUBIC,
                  "nearest": v2.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` on pixels scaled to [0, 1].

    EfficientNet-Lite's ``(x - 127) / 128`` on 0-255 pixels is ``mean=127/255, std=128/255``.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # resize filter: "bilinear" | "bicubic" | "nearest"
    crop_pct: float = 0.875  # evaluation: resize the shorter side to size/crop_pct, centre-crop

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")

    def describe(self) -> str:
        out = f"mean={[round(m, 6) for m in self.mean]},std={[round(s, 6) for s in self.std]}"
        if (self.interpolation, self.crop_pct) != ("bilinear", CROP_FRACTION):
            out += f",interpolation={self.interpolation},crop_pct={round(self.crop_pct, 6)}"
        return out

    def as_dict(self) -> dict:
        """JSON-ready form (saved with a model, recorded in run configs)."""
        return {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std],
                "interpolation": self.interpolation, "crop_pct": float(self.crop_pct)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(tuple(float(m) for m in d["mean"]), tuple(float(s) for s in d["std"]),
                   d.get("interpolation", "bilinear"), float(d.get("crop_pct", CROP_FRACTION)))


IMAGENET_NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LITE_NORM = Normalization((127 / 255,) * 3, (128 / 255,) * 3)
HALF_NORM = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))



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
        v2.Resize(round(size / getattr(norm, "crop_pct", CROP_FRACTION)),
                  antialias=True, **_interp(norm)),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(norm.mean, norm.std),
    ]
    return DraftDecode(steps, round(size / CROP_FRACTION)) if draft else v2.Compose(steps)


def takes_uint8_tensor(transform) -> bool:
    """True when ``transform`` starts by turning a PIL image into a uint8 tensor
    (``v2.PILToTensor``), so it may be given that tensor instead (it passes tensors through):
    :class:`~transferscope.data.ImageSet` then decodes JPEGs straight into tensors."""
    steps = getattr(transform, "transforms", None)
    return isinstance(transform, v2.Compose) and bool(steps) and \
        isinstance(steps[0], v2.PILToTensor)


def train_transform(norm: Normalization, size: int) -> v2.Compose:
    """Training augmentation: random resized crop and horizontal flip (papers 000, 002, 003)."""
    return v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(size, antialias=True, **_interp(norm)),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(norm.mean, norm.std),
    ])


def _interp(norm) -> dict:
    """``interpolation=`` for resizes; empty for bilinear (the default), so the transform's
    description, and every cache key made from it, is unchanged for bilinear models."""
    name = getattr(norm, "interpolation", "bilinear")
    return {} if name == "bilinear" else {"interpolation": INTERPOLATIONS[name]}


def describe_transform(t) -> str:
    """A string that changes whenever the transform's behaviour changes (used in cache keys)."""
    return repr(t).replace("\n", "").replace(" ", "")

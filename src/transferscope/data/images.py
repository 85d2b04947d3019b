"""Decoding and validating image files: every failure becomes a warning naming the path.

Very large images: a file over :data:`MAX_PIXELS` (64 M pixels, about 8000 x 8000 - more than
any camera photo) is never decoded at full size. A JPEG is decoded downscaled by 2, 4 or 8 in
the decoder itself (``Image.draft``, cheap, and every model resizes to a few hundred pixels
anyway); any other format, or a JPEG still too large at 1/8, is skipped with the reason
"image is WxH ...". PIL's decompression-bomb limit therefore never stops a run: the size is
checked here before anything is decoded.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["check_image", "CHECK_VERSION", "DECODER_ENV", "IMG_EXTENSIONS", "jpeg_decoder",
           "load_rgb", "load_rgb_tensor", "MAX_PIXELS", "SkippedFile"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_PIXELS = 64_000_000  # about 8000 x 8000; larger JPEGs are decoded downscaled, others skipped
DECODER_ENV = "TRANSFERSCOPE_DECODER"  # "pil": never TorchCodec
CHECK_VERSION = 2  # bump when check_image's verdicts change: cached verdicts are then redone


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def _too_large(width: int, height: int, extra: str = "") -> ValueError:
    return ValueError(f"image is {width}x{height} ({width * height:,} pixels), over the limit of "
                      f"{MAX_PIXELS:,}{extra}; downscale the file to use it")


def _open(path: str | Path, min_side: int | None = None) -> Image.Image:
    """``Image.open`` with transferscope's own size limit instead of PIL's bomb warning;
    with ``min_side`` a JPEG is decoded at 1/2, 1/4 or 1/8 scale when its shorter side stays
    at least ``min_side`` (``Image.draft``: the decoder skips the detail a resize to
    ``min_side`` would throw away)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:  # over 2x PIL's limit: not even opened
            raise ValueError(f"image is too large ({exc}); downscale the file to use it") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        if img.format != "JPEG":
            img.close()
            raise _too_large(width, height, " (only JPEGs are decoded downscaled)")
        for scale in (2, 4, 8):  # the JPEG decoder scales by 1/2, 1/4 or 1/8 for free
            if (width // scale) * (height // scale) <= MAX_PIXELS:
                break
        img.draft(img.mode, (width // scale, height // scale))
        if img.width * img.height > MAX_PIXELS:
            img.close()
            raise _too_large(width, height, " even at 1/8 scale")
    elif min_side and img.format == "JPEG" and min(width, height) >= 2 * min_side:
        img.draft(img.mode, (min_side, min_side))  # PIL keeps both sides >= the request
        if min(img.size) < min_side:  # never expected; decode at full size rather than blur
            img.close()
            img = Image.open(path)
    return img


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB (greyscale, CMYK, palette, alpha, 16-bit handled).

    ``min_side``: the caller resizes the shorter side to this many pixels next, so a large
    JPEG may be decoded at reduced scale with its shorter side still ``>= min_side``."""
    with _open(path, min_side) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
            arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
            return Image.fromarray(arr, mode="L").convert("RGB")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        return img.convert("RGB")


@functools.cache
def jpeg_decoder():
    """TorchCodec's ``decode_jpeg`` (PyTorch's image decoder; ``torchvision.io``'s is
    deprecated since torchvision 0.29), or None where it is not installed or was built for
    another torch: then PIL decodes everything (as it does with ``TRANSFERSCOPE_DECODER=pil``)."""
    if os.environ.get(DECODER_ENV, "").lower() == "pil":
        return None
    try:
        from torchcodec.decoders import decode_jpeg
    except Exception:  # noqa: BLE001 - ImportError, or OSError/RuntimeError from its library
        return None
    return decode_jpeg


def load_rgb_tensor(path: str | Path, min_side: int | None = None) -> torch.Tensor:
    """:func:`load_rgb` as a ``(3, H, W)`` uint8 tensor, pixel for pixel ``PILToTensor()(
    load_rgb(path, min_side))``.

    A plain JPEG (colour or greyscale, under :data:`MAX_PIXELS`, not to be draft-decoded) is
    decoded by TorchCodec (:func:`jpeg_decoder`) straight into a tensor: libjpeg-turbo, as in
    PIL, so the same pixels (``tests/test_data.py``), without PIL's copies into a tensor
    (500 x 375 px: 1.1 against 1.5-1.9 ms). Anything else - CMYK, other formats, large or
    draft-decoded JPEGs, a file libjpeg warns about, no TorchCodec - goes through
    :func:`load_rgb`, so what is decoded and what fails stays as it was.
    """
    decode = jpeg_decoder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
                plain = (decode is not None and img.format == "JPEG"
                         and img.mode in ("RGB", "L") and width * height <= MAX_PIXELS
                         and not (min_side and min(width, height) >= 2 * min_side))
        except Exception:  # noqa: BLE001 - load_rgb raises its own error for this file
            plain = False
        if plain:
            warnings.simplefilter("error")  # a libjpeg warning (corrupt data): load_rgb
            try:
                x = decode(torch.from_numpy(np.fromfile(path, dtype=np.uint8)),
                           mode="UNCHANGED")
            except Exception:  # noqa: BLE001
                x = None
            if x is not None and tuple(x.shape[1:]) == (height, width) and x.shape[0] in (1, 3):
                return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x
    return torch.from_numpy(np.array(load_rgb(path, min_side))).permute(2, 0, 1)


def check_image(path: str | Path) -> str | None:
    """Return None if the file decodes to a usable RGB image, else the reason it does not."""
    try:
        img = load_rgb(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if img.width < 2 or img.height < 2:
        return f"image is {img.width}x{img.height}; too small to classify"
    return None

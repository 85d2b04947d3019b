"""Decoding and validating image files: every failure becomes a warning naming the path.

Very large images: a file over :data:`MAX_PIXELS` (64 M pixels, about 8000 x 8000 - more than
any camera photo) is never decoded at full size. A JPEG is decoded downscaled by 2, 4 or 8 in
the decoder itself (``Image.draft``, cheap, and every model resizes to a few hundred pixels
anyway); any other format, or a JPEG still too large at 1/8, is skipped with the reason
"image is WxH ...". PIL's decompression-bomb limit therefore never stops a run: the size is
checked here before anything is decoded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_PIXELS = 64_000_000  # about 8000 x 8000; larger JPEGs are decoded downscaled, others skipped
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

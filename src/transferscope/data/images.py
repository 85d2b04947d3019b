"""Decoding and validating image files: every failure becomes a warning naming the path."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_PIXELS = 64_000_000  # about 8000 x 8000; larger files are skipped, not decoded


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to 8-bit RGB (greyscale, CMYK, palette, alpha, 16-bit handled)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"image is {img.width}x{img.height}, over {MAX_PIXELS} pixels")
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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"{type(exc).__name__}: {exc}"
    if img.width < 2 or img.height < 2:
        return f"image is {img.width}x{img.height}; too small to classify"
    return None

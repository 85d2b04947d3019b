"""Small JPEG thumbnails for the report's per-class drill-downs.

Three galleries, each a table (what is shown) plus ``{key: JPEG bytes}`` (the pixels), kept in
:attr:`AnalysisResult.images`:

* :func:`class_gallery` - per source class of every source-image set, one strip of its image
  and views (or of its first images) and how many samples the per-class measures average over;
* :func:`composite_gallery` - per background class, a few composites with each model's
  prediction;
* :func:`cam_gallery` - per background class, one composite with the Grad-CAM maps of the
  source model and of every target model overlaid (paper 001, Fig. 3a).

Sizes are capped (``tile`` pixels a side, JPEG quality 70): a strip of 5 tiles of 48 px is
about 2-3 kB, so 1,000 classes add about 3 MB to a report.
"""

from __future__ import annotations

import io
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from transferscope.config import usable_cpus

__all__ = ["boxed", "cam_gallery", "class_gallery", "composite_gallery", "first_per_pair", "heat",
           "jpeg", "overlay", "QUALITY", "strip", "tile_of"]

QUALITY = 70


def jpeg(img: Image.Image, quality: int = QUALITY) -> bytes:
    """``img`` as baseline JPEG bytes (RGB; deterministic for the same pixels)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def tile_of(img: Image.Image, side: int) -> Image.Image:
    """Centre square crop of ``img`` resized to ``side x side``."""
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return img.convert("RGB").resize((side, side), Image.BILINEAR, box=box, reducing_gap=2.0)


def strip(images: list[Image.Image], side: int) -> Image.Image:
    """Tiles of ``side`` pixels side by side, 2 px apart on white.

    Example:
        >>> strip([Image.new("RGB", (10, 20))] * 3, 8).size
        (28, 8)
    """
    out = Image.new("RGB", (len(images) * (side + 2) - 2, side), (255, 255, 255))
    for i, img in enumerate(images):
        out.paste(tile_of(img, side), (i * (side + 2), 0))
    return out


def class_gallery(source_data: dict, tile: int = 48, max_tiles: int = 5):
    """Per (set, source class): a strip of up to ``max_tiles`` images and the sample counts.

    ``source_data`` maps set names to labelled source images (an ``ImageSet`` or a ``ViewSet``
    of ``n_views`` views per image). Returns ``(rows, images)``: rows with ``source images``,
    ``class``, ``images`` (distinct images), ``views`` (per image), ``samples`` (what a
    per-class recall or bias is a fraction over) and ``image`` (the strip's key).

    Strips are decoded and encoded on a thread per usable core (PIL releases the GIL while it
    decodes, resizes and encodes): 1,000 classes x 5 images is 5,000 decodes.
    """
    rows, jobs = [], {}
    for s, (set_name, data) in enumerate(source_data.items()):
        views = int(getattr(data, "n_views", 1))
        base = getattr(data, "base", data)
        by_class: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(base.targets.tolist()):
            by_class[label].append(i)
        for c in sorted(by_class):
            ids = by_class[c]
            key = f"class/{s}/{c}"
            jobs[key] = (data, base, views, ids[0], ids[:max_tiles])
            rows.append({"source images": set_name, "class": c, "images": len(ids),
                         "views": views, "samples": len(ids) * views, "image": key})

    def strip_of(job) -> bytes:
        data, base, views, first, ids = job
        if views > 1:  # the first image and its views (view 0 is the image itself)
            picks = [data.load_image(first * views + v) for v in range(min(views, max_tiles))]
        else:  # JPEG draft decoding to about the tile's size, as PIL's thumbnail() does
            picks = [base.load_image(i, tile) for i in ids]
        return jpeg(strip(picks, tile))

    with ThreadPoolExecutor(min(8, usable_cpus())) as pool:
        images = dict(zip(jobs, pool.map(strip_of, jobs.values())))  # in row order
    return rows, images


def boxed(img: Image.Image, box, side: int) -> Image.Image:
    """``img`` with the pasted overlay's ``box`` (x0, y0, x1, y1) outlined, resized to ``side``."""
    img = img.convert("RGB")
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(255, 220, 0),
                                  width=max(1, img.size[0] // 48))
    return img.resize((side, side), Image.BILINEAR)


def first_per_pair(backgrounds: torch.Tensor, pasted: torch.Tensor, per_class: int
                   ) -> dict[int, list[int]]:
    """Per background class, the lowest composite index of each pasted class (at most
    ``per_class``, in index order).

    Example:
        >>> first_per_pair(torch.tensor([3, 3, 3, 5]), torch.tensor([0, 0, 1, 1]), 4)
        {3: [0, 2], 5: [3]}
    """
    seen, out = set(), defaultdict(list)
    for i, (b, p) in enumerate(zip(backgrounds.tolist(), pasted.tolist())):
        if (b, p) not in seen and len(out[b]) < per_class:
            seen.add((b, p))
            out[b].append(i)
    return dict(out)


def composite_gallery(comp, preds: dict[str, torch.Tensor], classes: list[str],
                      per_class: int = 4, side: int = 96):
    """Up to ``per_class`` composites per background class with every model's prediction.

    ``preds`` maps model names to ``(N,)`` predicted target classes of ``comp``.
    """
    rows, images = [], {}
    for bg, ids in first_per_pair(comp.background_labels, comp.targets, per_class).items():
        for i in ids:
            key = f"composite/{i}"
            images[key] = jpeg(boxed(comp.load_image(i), comp.boxes[i].tolist(), side))
            rows.append({"background class": bg, "composite": i,
                         "pasted class": classes[int(comp.targets[i])], "image": key,
                         **{m: classes[int(p[i])] for m, p in preds.items()}})
    return rows, images


def heat(cam: torch.Tensor, side: int) -> np.ndarray:
    """``(h, w)`` map -> ``(side, side, 3)`` uint8 jet colours of the map scaled to [0, 1]."""
    m = F.interpolate(cam[None, None].double(), size=(side, side), mode="bilinear",
                      align_corners=False)[0, 0].clamp(min=0)
    x = (m / m.max() if m.max() > 0 else m).numpy()
    rgb = [np.clip(1.5 - np.abs(4 * x - k), 0, 1) for k in (3, 2, 1)]
    return (np.stack(rgb, -1) * 255).astype(np.uint8)


def overlay(img: Image.Image, cam: torch.Tensor, side: int, alpha: float = 0.5) -> Image.Image:
    """``img`` (resized to ``side``) blended with the jet colours of ``cam``."""
    base = np.asarray(img.convert("RGB").resize((side, side), Image.BILINEAR), dtype=np.float64)
    return Image.fromarray(((1 - alpha) * base + alpha * heat(cam, side)).astype(np.uint8))


def cam_gallery(comp, source_cam: torch.Tensor, cams: dict[str, torch.Tensor],
                scores: dict[str, np.ndarray], classes: list[str], side: int = 96):
    """Per background class, its first composite and the Grad-CAM overlays of the source model
    (for the background's class) and of every target model (for its prediction), with each
    model's distraction on that composite."""
    rows, images = [], {}
    for bg, (i, *_) in first_per_pair(comp.background_labels, comp.targets, 1).items():
        img = comp.load_image(i)
        row = {"background": bg, "composite": i,
               "pasted class": classes[int(comp.targets[i])], "image": f"cam/{i}/image",
               "cam source": f"cam/{i}/source"}
        images[row["image"]] = jpeg(boxed(img, comp.boxes[i].tolist(), side))
        images[row["cam source"]] = jpeg(overlay(img, source_cam[i], side))
        for j, (name, cam) in enumerate(cams.items()):
            row[f"cam {name}"] = f"cam/{i}/{j}"
            images[row[f"cam {name}"]] = jpeg(overlay(img, cam[i], side))
            row[f"distraction {name}"] = float(scores[name][i])
        rows.append(row)
    return rows, images

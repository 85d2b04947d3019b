"""MedMNIST+ ``.npz`` archives (Yang et al., Scientific Data 2023; Zenodo record 10519652)
unpacked into an image folder the loaders read: ``train/<label>/*.png``, ``val/<label>/*.png``.

Written by hand because the ``medmnist`` package only wraps the same ``np.load`` and would pull
in its own dependencies; the archive is read with ``allow_pickle=False`` (arrays only)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from transferscope.errors import DataError

__all__ = ["md5_of", "unpack_npz"]


def md5_of(path: Path) -> str:
    """The file's MD5 (the checksum MedMNIST publishes for each archive)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def unpack_npz(archive: Path, dest: Path, labels: dict[int, str],
               per_class: dict[str, int]) -> dict[str, int]:
    """Write the first ``per_class[split]`` images of every label of each split (MedMNIST's
    ``train`` and ``val``) as PNG files ``dest/<split>/<label>/<split>_<index>.png``; returns
    the counts by ``split/label``.

    Raises:
        DataError: not an npz of MedMNIST's layout, or too few images of a label.
    """
    try:
        data = np.load(archive, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{archive.name}: not a readable .npz archive ({exc}); delete it and "
                        "download again") from None
    counts: dict[str, int] = {}
    for split, n in per_class.items():
        images, y = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if images is None or y is None or images.dtype != np.uint8 or len(images) != len(y):
            raise DataError(f"{archive.name}: no uint8 '{split}_images' with matching "
                            f"'{split}_labels'; not a MedMNIST archive")
        y = y.reshape(len(y), -1)[:, 0]
        for label, name in labels.items():
            idx = np.flatnonzero(y == label)[:n]
            if len(idx) < n:
                raise DataError(f"{archive.name}: only {len(idx)} '{name}' images in {split}, "
                                f"{n} needed")
            folder = dest / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx:
                Image.fromarray(images[i]).save(folder / f"{split}_{i:05d}.png")
            counts[f"{split}/{name}"] = len(idx)
    return counts

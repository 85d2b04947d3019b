"""Data sets beyond the ImageFolder layout.

* :func:`csv_set` - a CSV file with columns ``path,label`` and an optional ``split``; paths
  absolute or relative to the CSV's folder. Accepted wherever a data set is
  (``--data labels.csv``, ``data = "labels.csv"`` in a study): :func:`image_folder` hands
  ``*.csv`` names to it.
* :func:`from_dataset` - any torch ``Dataset`` returning ``(image, label)`` with a ``classes``
  list, as an :class:`~transferscope.data.ImageSet` with a content digest.
* :func:`imagenet_val_labels` - ImageNet's flat validation layout
  (``ILSVRC2012_val_00000001.JPEG`` ...) labelled by the devkit's ground-truth file (+
  ``meta.mat``) or Kaggle's ``LOC_val_solution.csv``; :func:`source_images` uses it.

Malformed input is a one-line :class:`~transferscope.errors.DataError` naming the file and row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from transferscope.data.file_index import FileIndex
from transferscope.data.image_set import ImageSet, Sample
from transferscope.data.images import IMG_EXTENSIONS, SkippedFile
from transferscope.errors import DataError

__all__ = ["csv_set", "DatasetImageSet", "DEVKIT_GT", "from_dataset", "imagenet_val_labels",
           "KAGGLE_GT", "VAL_FILE"]

VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
DEVKIT_GT = "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_GT = "LOC_val_solution.csv"


# ----------------------------------------------------------------------------- CSV
def _sort_labels(labels: set[str]) -> list[str]:
    """Class order: numeric labels by value (``2`` before ``10``), else alphabetical."""
    if all(re.fullmatch(r"-?\d+", v) for v in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def csv_set(path: str | os.PathLike, split: str | None = None, *,
            transform: Callable | None = None) -> ImageSet:
    """The rows of a ``path,label[,split]`` CSV (of ``split``, if given) as an ImageSet.

    Classes are the sorted labels of *all* rows, so every split shares one class list.
    Images that cannot be decoded are skipped and listed, as in a folder.

    Example:
        >>> ds = csv_set("labels.csv", "train")  # doctest: +SKIP
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise DataError(f"CSV data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable UTF-8 CSV file ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "path" not in header or "label" not in header:
        raise DataError(f"{path}: row 1 must be a header with columns path,label[,split]; "
                        f"found {header or 'an empty file'}")
    col = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    if split is not None and "split" not in col:
        raise DataError(f"{path} has no 'split' column, but split {split!r} was asked for; add "
                        "a split column (train/val) or use the whole file")
    rows, seen = [], {}
    base = path.parent
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path} row {lineno}: {len(row)} fields, the header has "
                            f"{len(header)} ({','.join(header)})")
        file, label = row[col["path"]].strip(), row[col["label"]].strip()
        part = row[col["split"]].strip() if "split" in col else None
        if not file or not label or ("split" in col and not part):
            raise DataError(f"{path} row {lineno}: empty "
                            f"{'path' if not file else 'label' if not label else 'split'}")
        full = Path(file).expanduser()
        full = full if full.is_absolute() else base / full
        if not full.is_file():
            raise DataError(f"{path} row {lineno}: image {file} not found (paths are absolute "
                            f"or relative to {base})")
        key = (str(full.resolve()), part)
        if key in seen:
            raise DataError(f"{path} row {lineno}: {file} is listed twice (also row "
                            f"{seen[key]}{f' in split {part}' if part else ''})")
        seen[key] = lineno
        rows.append((lineno, full, label, part))
    if not rows:
        raise DataError(f"{path}: no data rows under the header")
    classes = _sort_labels({r[2] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    chosen = [r for r in rows if split is None or r[3] == split]
    if not chosen:
        parts = sorted({r[3] for r in rows})
        raise DataError(f"{path}: no rows with split {split!r} (splits there: "
                        f"{', '.join(parts)})")
    files, skipped, samples = FileIndex(), [], []
    for lineno, full, _, _ in chosen:
        if full.suffix.lower() not in IMG_EXTENSIONS:
            raise DataError(f"{path} row {lineno}: {full.name} is not an image file "
                            f"({', '.join(sorted(IMG_EXTENSIONS))})")
    checked = files.check_many([full for _, full, _, _ in chosen])
    for (lineno, full, label, _), (found, exc) in zip(chosen, checked):
        if exc is not None:
            files.save()  # what was checked stays checked
            raise DataError(f"{path} row {lineno}: {full} is unreadable ({exc})") from exc
        sha, problem = found
        if problem:
            skipped.append(SkippedFile(str(full), f"{problem} ({path.name} row {lineno})"))
            continue
        samples.append(Sample(os.path.relpath(full, base), index[label], sha))
    files.save()
    if not samples:
        raise DataError(f"{path}: none of the {len(chosen)} images is usable; first problem: "
                        f"{skipped[0].path}: {skipped[0].reason}")
    samples.sort(key=lambda s: (s.label, s.path))
    return ImageSet(base, samples, classes, "target", skipped, transform)


# ----------------------------------------------------------------------------- torch Dataset
class DatasetImageSet(ImageSet):
    """An :class:`ImageSet` over a torch ``Dataset``: sample ``i`` is ``dataset[i]``.

    The digest hashes every image's pixels and label (computed once, when wrapped), so caches
    are keyed to the content, as for files.
    """

    dataset: object = None

    def load_image(self, index: int, min_side: int | None = None):
        """The dataset's image as RGB PIL (``min_side``, a draft-decoding hint for JPEG files,
        does not apply: the dataset decodes its own images)."""
        from torchvision.transforms.functional import to_pil_image

        img = self.dataset[int(self.samples[index].path)][0]
        if isinstance(img, torch.Tensor):
            if img.is_floating_point():
                img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
            img = to_pil_image(img)
        return img.convert("RGB") if hasattr(img, "convert") else img

    def load_tensor(self, index: int, min_side: int | None = None) -> torch.Tensor:
        """:meth:`load_image` as a ``(3, H, W)`` uint8 tensor."""
        return torch.from_numpy(np.array(self.load_image(index))).permute(2, 0, 1)

    def with_transform(self, transform):
        return _dataset_set(self.dataset, self.root, self.samples, self.classes, transform)

    def subset(self, indices):
        return _dataset_set(self.dataset, self.root, [self.samples[i] for i in indices],
                            self.classes, self.transform)


def _dataset_set(dataset, root, samples, classes, transform) -> DatasetImageSet:
    out = DatasetImageSet(root, samples, classes, "target", [], transform)
    out.dataset = dataset
    return out


def _image_bytes(img) -> bytes:
    if isinstance(img, torch.Tensor):
        return img.detach().cpu().contiguous().numpy().tobytes()
    if hasattr(img, "tobytes"):  # PIL
        return f"{img.mode}{img.size}".encode() + img.tobytes()
    return np.asarray(img).tobytes()


def from_dataset(dataset, classes: list[str] | None = None, *, name: str | None = None,
                 transform: Callable | None = None) -> ImageSet:
    """Wrap a torch ``Dataset`` whose items are ``(image, label)`` (PIL image or ``(3, H, W)``
    tensor, int label) and which has ``classes`` (or pass ``classes=``).

    Example:
        >>> from torchvision.datasets import FakeData  # doctest: +SKIP
    """
    classes = list(classes if classes is not None else getattr(dataset, "classes", None) or [])
    label = name or type(dataset).__name__
    if not classes:
        raise DataError(f"data set {label}: it has no 'classes' list; pass classes=[...]")
    if len(dataset) == 0:
        raise DataError(f"data set {label} is empty")
    samples = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"data set {label} item {i}: expected (image, label), got "
                            f"{type(item).__name__}")
        y = int(item[1])
        if not 0 <= y < len(classes):
            raise DataError(f"data set {label} item {i}: label {y} outside 0..{len(classes) - 1}"
                            f" ({len(classes)} classes)")
        sha = hashlib.sha256(_image_bytes(item[0])).hexdigest()
        samples.append(Sample(str(i), y, sha))
    return _dataset_set(dataset, Path(label), samples, [str(c) for c in classes], transform)


# ----------------------------------------------------------------------------- ImageNet val
def _find(root: Path, name: str) -> Path | None:
    for folder in (root, root.parent, root / "data", root.parent / "data"):
        if (folder / name).is_file():
            return folder / name
    return None


def imagenet_val_labels(root: Path) -> dict[str, str] | None:
    """File name -> wnid for a flat ``ILSVRC2012_val_*.JPEG`` folder, from
    ``LOC_val_solution.csv`` or the devkit's ground-truth file + ``meta.mat`` (looked for in
    the folder, its parent and their ``data/``); None when the folder is not that layout."""
    files = [p.name for p in root.iterdir() if VAL_FILE.match(p.name)]
    if not files:
        return None
    kaggle, devkit = _find(root, KAGGLE_GT), _find(root, DEVKIT_GT)
    if kaggle is not None:
        return _kaggle_labels(kaggle)
    if devkit is not None:
        meta = _find(devkit.parent, "meta.mat")
        if meta is None:
            raise DataError(f"{devkit} needs the devkit's meta.mat beside it (its IDs are not "
                            "wnid-sorted indices)")
        return _devkit_labels(devkit, meta, files)
    raise DataError(f"{root} holds ImageNet validation files ({len(files)} ILSVRC2012_val_*.JPEG)"
                    f" but no labels: put {KAGGLE_GT} or the devkit's {DEVKIT_GT} + meta.mat in "
                    "it or its parent, or sort the images into wnid folders")


def _kaggle_labels(path: Path) -> dict[str, str]:
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        if header[:2] != ["ImageId", "PredictionString"]:
            raise DataError(f"{path} row 1: expected header ImageId,PredictionString, got "
                            f"{','.join(header)}")
        for lineno, row in enumerate(reader, start=2):
            wnid = row[1].split()[0] if len(row) == 2 and row[1].split() else ""
            if not re.fullmatch(r"n\d{8}", wnid):
                raise DataError(f"{path} row {lineno}: no wnid at the start of "
                                f"PredictionString ({','.join(row)[:60]})")
            out[row[0] + ".JPEG"] = wnid
    return out


def _devkit_labels(path: Path, meta: Path, files: list[str]) -> dict[str, str]:
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                      if int(s["num_children"]) == 0}
    except Exception as exc:  # noqa: BLE001 - any unreadable meta.mat
        raise DataError(f"{meta}: not the devkit's meta.mat ({exc})") from exc
    out = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if not line.strip().isdigit() or int(line) not in id_to_wnid:
            raise DataError(f"{path} row {lineno}: {line.strip()[:20]!r} is not an "
                            f"ILSVRC2012_ID of {meta.name}")
        out[f"ILSVRC2012_val_{lineno:08d}.JPEG"] = id_to_wnid[int(line)]
    known = {k.upper() for k in out}
    missing = [f for f in files if f.upper() not in known]
    if missing:
        raise DataError(f"{path} has {len(out)} rows; no label for {missing[0]}")
    return out

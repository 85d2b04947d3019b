"""Image data sets with a content manifest, so every result can be keyed to the exact data.

Two layouts:

* :func:`image_folder` - torchvision ``ImageFolder`` layout ``ROOT/<class>/<image>``; labels are
  the sorted class-folder names (target data sets).
* :func:`source_images` - labelled source-domain images whose labels are source-head indices:
  a flat folder of ``<wnid>_<name>.JPEG`` files (``imagenet-samples``) or wnid-named class
  folders (ImageNet ``val`` layout, ``imagenette``).

Unusable files (corrupt, truncated, not an image, too small) are skipped and recorded in
:attr:`ImageSet.skipped` with their path and reason; a set with nothing usable is an error.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from transferscope import config
from transferscope.data.file_index import FileIndex
from transferscope.data.image_set import ImageSet, Sample
from transferscope.data.imagenet import imagenet_names, parse_wnid, wnid_to_index
from transferscope.data.images import IMG_EXTENSIONS, SkippedFile
from transferscope.data.tables import csv_set, imagenet_val_labels
from transferscope.errors import DataError

__all__ = ["IGNORED_NAMES", "image_folder", "resolve_folder", "source_images"]

IGNORED_NAMES = {"SOURCE.md", "SHA256SUMS", "README.md", "LICENSE", "DOWNLOAD.json", ".DS_Store"}


# --------------------------------------------------------------------------- resolving names
def resolve_folder(name_or_path: str | os.PathLike, split: str | None = None,
                   data_root: str | os.PathLike | None = None) -> Path:
    """Turn ``'hymenoptera'`` or a path into an existing folder (``split`` appended if present).

    Raises:
        DataError: naming the folders tried and how to point transferscope at the data.
    """
    raw = Path(name_or_path).expanduser()
    tried = []
    bases = [raw] if raw.is_absolute() or raw.exists() else []
    root = config.data_root(data_root)
    if not raw.is_absolute():
        bases.append(root / raw)
    for base in bases:
        for cand in ([base / split, base] if split else [base]):
            tried.append(str(cand))
            if cand.is_dir():
                return cand
    raise DataError(
        f"data folder not found: {name_or_path!r} (tried {', '.join(tried)}). "
        f"Give an existing folder, or set the data root with --data-root or ${config.DATA_ENV} "
        f"(now {root}); `transferscope data fetch hymenoptera` downloads the ants-vs-bees set."
    )


def _resolve_file(name_or_path, data_root) -> Path:
    raw = Path(name_or_path).expanduser()
    if raw.is_file() or raw.is_absolute():
        return raw
    under = config.data_root(data_root) / raw
    return under if under.is_file() else raw


# --------------------------------------------------------------------------- scanning
def _walk_files(folder: Path) -> list[Path]:
    """All files below ``folder``, following directory links once (no symlink loops)."""
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return out


def _scan(root: Path, labelled: list[tuple[Path, int]], index: FileIndex,
          skipped: list[SkippedFile]) -> list[Sample]:
    """Samples of the usable files, in ``labelled``'s order (:meth:`FileIndex.check_many`)."""
    candidates = []
    for path, label in labelled:
        if path.name in IGNORED_NAMES or path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMG_EXTENSIONS:
            skipped.append(SkippedFile(str(path), "not an image file extension"))
            continue
        candidates.append((path, label))

    results = index.check_many([p for p, _ in candidates])
    samples = []
    for (path, label), (found, exc) in zip(candidates, results):
        if exc is not None:
            skipped.append(SkippedFile(str(path), f"unreadable: {exc}"))
            continue
        sha, problem = found
        if problem:
            skipped.append(SkippedFile(str(path), problem))
            continue
        samples.append(Sample(path.relative_to(root).as_posix(), label, sha))
    return samples


def image_folder(name_or_path: str | os.PathLike, split: str | None = None, *,
                 data_root: str | os.PathLike | None = None, transform: Callable | None = None,
                 empty_classes: str = "error") -> ImageSet:
    """Load an ``ImageFolder``-layout set: ``ROOT[/split]/<class>/<image>``.

    Args:
        name_or_path: a folder, or a set name under the data root (``"hymenoptera"``).
        split: sub-folder such as ``"train"`` or ``"val"``.
        empty_classes: ``"error"`` (default) or ``"skip"`` for class folders with no usable image.

    Example (a folder written on the spot; an unreadable file is skipped and listed):
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = Path(tmp.name)
        >>> for c, n in (("ants", 3), ("bees", 2)):
        ...     (root / "val" / c).mkdir(parents=True)
        ...     for i in range(n):
        ...         Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(root / "val" / c / f"{i}.png")
        >>> _ = (root / "val" / "bees" / "broken.jpg").write_bytes(b"not an image")
        >>> ds = image_folder(root, "val")
        >>> ds.classes, len(ds), ds.class_counts()
        (['ants', 'bees'], 5, [3, 2])
        >>> [Path(s.path).name for s in ds.skipped]
        ['broken.jpg']
        >>> tmp.cleanup()

        With the data root (skipped here: needs the hymenoptera data set):

        >>> ds = image_folder("hymenoptera", "val")  # doctest: +SKIP
        >>> ds.classes, len(ds)  # doctest: +SKIP
        (['ants', 'bees'], 153)

    A ``*.csv`` file (``path,label[,split]``) is read by
    :func:`~transferscope.data.tables.csv_set` instead (``split`` selects its rows).
    """
    if str(name_or_path).lower().endswith(".csv"):
        return csv_set(_resolve_file(name_or_path, data_root), split, transform=transform)
    root = resolve_folder(name_or_path, split, data_root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image>.jpg")
    index, skipped, samples, classes = FileIndex(), [], [], []
    files_of = [_walk_files(d) for d in class_dirs]
    checked: list[SkippedFile] = []  # one scan of every class (threads across classes)
    found_all = _scan(root, [(f, k) for k, files in enumerate(files_of) for f in files], index,
                      checked)
    class_of = {str(f): k for k, files in enumerate(files_of) for f in files}
    found_in: dict[int, list[Sample]] = {}
    skipped_in: dict[int, list[SkippedFile]] = {}
    for sample in found_all:
        found_in.setdefault(sample.label, []).append(sample)
    for skip in checked:
        skipped_in.setdefault(class_of[skip.path], []).append(skip)
    for k, (d, files) in enumerate(zip(class_dirs, files_of)):
        skipped.extend(skipped_in.get(k, []))
        found = [replace(s, label=len(classes)) for s in found_in.get(k, [])]
        if not found:
            if empty_classes == "skip":
                skipped.append(SkippedFile(str(d), "class folder has no usable image"))
                continue
            raise DataError(f"class folder {d} has no usable image ({len(files)} files, all "
                            "skipped); add images, remove the folder, or pass "
                            "empty_classes='skip'")
        classes.append(d.name)
        samples.extend(found)
    index.save()
    return ImageSet(root, samples, classes, "target", skipped, transform)


def _source_label(name: str, by_name: dict[str, int]) -> int | None:
    wnid = parse_wnid(name)
    if wnid is not None:
        return wnid_to_index().get(wnid)
    return by_name.get(name.lower().replace("_", " "))


def source_images(name_or_path: str | os.PathLike, split: str | None = None, *,
                  data_root: str | os.PathLike | None = None,
                  transform: Callable | None = None) -> ImageSet:
    """Labelled source-domain (ImageNet) images; labels are source-head indices 0..999.

    Accepts a flat folder of ``<wnid>_<name>.JPEG`` files, class folders named by wnid
    (``n01440764``) or by ImageNet class name (``tench``), or ImageNet's flat validation
    files ``ILSVRC2012_val_*.JPEG`` with the devkit ground truth or ``LOC_val_solution.csv``
    (:func:`~transferscope.data.tables.imagenet_val_labels`). Files that map to no class are
    recorded in ``skipped``.
    """
    root = resolve_folder(name_or_path, split, data_root)
    by_name = {n.lower(): i for i, n in enumerate(imagenet_names())}
    labelled, skipped = [], []
    val = imagenet_val_labels(root)  # flat ILSVRC2012_val_*.JPEG + ground truth, or None
    for entry in sorted(root.iterdir()):
        if val is not None and entry.is_file():
            wnid = val.get(entry.name)
            if wnid is not None:
                labelled.append((entry, wnid_to_index()[wnid]))
                continue
        if entry.name.startswith(".") or entry.name in IGNORED_NAMES:
            continue
        label = _source_label(entry.stem if entry.is_file() else entry.name, by_name)
        if label is None:
            skipped.append(SkippedFile(str(entry), "name maps to no ImageNet class"))
            continue
        files = _walk_files(entry) if entry.is_dir() else [entry]
        labelled.extend((f, label) for f in files)
    if not labelled:
        raise DataError(
            f"no file or folder name in {root} maps to an ImageNet class; name files "
            "'<wnid>_<name>.JPEG' (e.g. n01440764_tench.JPEG) or folders by wnid "
            "('n01440764/') or class name ('tench/')")
    index = FileIndex()
    samples = _scan(root, labelled, index, skipped)
    index.save()
    if not samples:
        raise DataError(f"{root}: none of the {len(labelled)} source images is usable; "
                        f"first problem: {skipped[-1].path}: {skipped[-1].reason}")
    return ImageSet(root, samples, imagenet_names(), "imagenet", skipped, transform)

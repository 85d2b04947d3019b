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

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from transferscope import config
from transferscope._io import atomic_write_json, file_sha256
from transferscope._progress import progress_bar
from transferscope.data.imagenet import imagenet_names, parse_wnid, wnid_to_index
from transferscope.data.images import (CHECK_VERSION, IMG_EXTENSIONS, SkippedFile, check_image,
                                       load_rgb)
from transferscope.errors import DataError

SCAN_THREADS_MIN_FILES = 64  # fewer new files: checking them one by one is as quick
IGNORED_NAMES = {"SOURCE.md", "SHA256SUMS", "README.md", "LICENSE", "DOWNLOAD.json", ".DS_Store"}


@dataclass(frozen=True)
class Sample:
    """One image: path relative to the set's root, integer label, content hash."""

    path: str
    label: int
    sha256: str


@dataclass
class ImageSet(Dataset):
    """A labelled image set: ``ds[i] -> (image_tensor, label)`` once a transform is set.

    Attributes:
        root: folder the sample paths are relative to.
        samples: the usable images, in a stable sorted order.
        classes: label names; ``classes[label]`` is the name of a label.
        label_space: ``"target"`` (folder classes) or ``"imagenet"`` (source-head indices).
        skipped: files that were found but could not be used, with reasons.
    """

    root: Path
    samples: list[Sample]
    classes: list[str]
    label_space: str = "target"
    skipped: list[SkippedFile] = field(default_factory=list)
    transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        # a transform that resizes down says how small the decoded image may be (JPEG draft)
        img = self.load_image(index, getattr(self.transform, "decode_min_side", None))
        if self.transform is not None:
            img = self.transform(img)
        return img, sample.label

    def load_image(self, index: int, min_side: int | None = None):
        """The decoded RGB ``PIL.Image`` of sample ``index`` (no transform); ``min_side``: see
        :func:`~transferscope.data.images.load_rgb`."""
        path = self.root / self.samples[index].path
        try:
            return load_rgb(path, min_side)
        except Exception as exc:  # validated at scan time; a file changed underneath us
            raise DataError(f"{path} could not be read any more ({exc}); it changed after the "
                            "data set was scanned - re-run to re-scan the folder") from exc

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def digest(self) -> str:
        """sha256 of the manifest: relative paths, labels, file contents and class names."""
        payload = {"classes": self.classes, "label_space": self.label_space,
                   "samples": [[s.path, s.label, s.sha256] for s in self.samples]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def manifest(self) -> dict:
        """The machine-readable manifest (what :attr:`digest` hashes, plus the skipped files)."""
        return {"root": str(self.root), "digest": self.digest, "classes": self.classes,
                "label_space": self.label_space,
                "samples": [s.__dict__ for s in self.samples],
                "skipped": [s.__dict__ for s in self.skipped]}

    def with_transform(self, transform: Callable | None) -> "ImageSet":
        """The same samples with another transform (shares the sample list)."""
        return ImageSet(self.root, self.samples, self.classes, self.label_space, self.skipped,
                        transform)

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        return ImageSet(self.root, [self.samples[i] for i in indices], self.classes,
                        self.label_space, self.skipped, self.transform)

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for s in self.samples:
            counts[s.label] += 1
        return counts


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
class _FileIndex:
    """Remembers (size, mtime) -> (sha256, problem) so re-scans hash and decode nothing new.

    The index file carries the version of the image checks and a hash of its own entries: an
    index written by other checks, or altered on disk, is dropped and rebuilt, never trusted.
    """

    def __init__(self) -> None:
        self.path = config.cache_dir() / "file-index.json"
        try:
            stored = json.loads(self.path.read_text())
            entries = stored["entries"]
            ok = (stored.get("checks") == CHECK_VERSION
                  and stored.get("sha256") == self._hash(entries))
        except (OSError, ValueError, KeyError, TypeError):
            entries, ok = {}, False
        self.entries = entries if ok else {}
        self.dirty = False

    @staticmethod
    def _hash(entries: dict) -> str:
        return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()

    def lookup(self, path: Path) -> tuple[str, list, tuple[str, str | None] | None]:
        """``(key, stamp, (sha256, problem) or None)``: None when ``path`` is not indexed with
        its current size and modification time (raises OSError when it cannot be read)."""
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        hit = self.entries.get(key)
        return key, stamp, (hit[1], hit[2]) if hit and hit[0] == stamp else None

    def compute(self, path: Path, key: str, stamp: list) -> tuple[str, str | None]:
        """Hash and validity check of ``path``, stored under ``key`` (thread-safe: one dict
        assignment)."""
        sha = file_sha256(path)
        problem = check_image(path)
        self.entries[key] = [stamp, sha, problem]
        self.dirty = True
        return sha, problem

    def check_many(self, paths: Sequence[Path]) -> list[tuple[tuple | None, OSError | None]]:
        """Hash and validity of every path, in order, as ``((sha256, problem), None)`` or
        ``(None, the OSError)``. Files not indexed yet are hashed and decoded (the validity
        check) on a thread per usable core, up to 8: hashlib and PIL release the GIL, so a
        first scan of 50,000 JPEGs runs on every core."""
        results: list = []
        todo = []  # (position, path, key, stamp) of files not indexed yet
        for path in paths:
            try:
                key, stamp, hit = self.lookup(path)
            except OSError as exc:
                results.append((None, exc))
                continue
            results.append((hit, None))
            if hit is None:
                todo.append((len(results) - 1, path, key, stamp))

        def compute(job):
            _, path, key, stamp = job
            try:
                return self.compute(path, key, stamp), None
            except OSError as exc:
                return None, exc

        threads = min(8, config.usable_cpus())
        pool = ThreadPoolExecutor(threads) if threads > 1 and \
            len(todo) >= SCAN_THREADS_MIN_FILES else None
        done = []
        try:
            with progress_bar(len(todo), f"checking {len(todo)} new image files",
                              None if len(todo) >= SCAN_THREADS_MIN_FILES else False) as advance:
                for result in (pool.map(compute, todo) if pool else map(compute, todo)):
                    done.append(result)
                    advance()
        except BaseException:  # interrupted: what was checked is kept for the next scan
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
            self.save()
            raise
        finally:
            if pool:
                pool.shutdown()
        for (i, *_), result in zip(todo, done):
            results[i] = result
        return results

    def save(self) -> None:
        if self.dirty:
            try:
                atomic_write_json(self.path, {"checks": CHECK_VERSION, "entries": self.entries,
                                              "sha256": self._hash(self.entries)})
            except OSError:
                pass  # a read-only cache only costs speed


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


def _scan(root: Path, labelled: list[tuple[Path, int]], index: _FileIndex,
          skipped: list[SkippedFile]) -> list[Sample]:
    """Samples of the usable files, in ``labelled``'s order (:meth:`_FileIndex.check_many`)."""
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
        from transferscope.data.tables import csv_set

        return csv_set(_resolve_file(name_or_path, data_root), split, transform=transform)
    root = resolve_folder(name_or_path, split, data_root)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image>.jpg")
    index, skipped, samples, classes = _FileIndex(), [], [], []
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
    from transferscope.data.tables import imagenet_val_labels

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
    index = _FileIndex()
    samples = _scan(root, labelled, index, skipped)
    index.save()
    if not samples:
        raise DataError(f"{root}: none of the {len(labelled)} source images is usable; "
                        f"first problem: {skipped[-1].path}: {skipped[-1].reason}")
    return ImageSet(root, samples, imagenet_names(), "imagenet", skipped, transform)

"""The labelled image set every data adapter returns, keyed to its content by a manifest digest.

:class:`ImageSet` is what :func:`~transferscope.data.image_folder`,
:func:`~transferscope.data.source_images`, :func:`~transferscope.data.csv_set` and
:func:`~transferscope.data.from_dataset` build; every cache key and result names its
:attr:`ImageSet.digest`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from transferscope.data.images import SkippedFile, load_rgb, load_rgb_tensor
from transferscope.data.transforms import takes_uint8_tensor
from transferscope.errors import DataError

__all__ = ["ImageSet", "Sample"]


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
        min_side = getattr(self.transform, "decode_min_side", None)
        if takes_uint8_tensor(self.transform):  # JPEGs decoded straight into a tensor
            img = self.load_tensor(index, min_side)
        else:
            img = self.load_image(index, min_side)
        if self.transform is not None:
            img = self.transform(img)
        return img, sample.label

    def load_image(self, index: int, min_side: int | None = None):
        """The decoded RGB ``PIL.Image`` of sample ``index`` (no transform); ``min_side``: see
        :func:`~transferscope.data.images.load_rgb`."""
        return self._decode(load_rgb, index, min_side)

    def load_tensor(self, index: int, min_side: int | None = None) -> torch.Tensor:
        """:meth:`load_image` as a ``(3, H, W)`` uint8 tensor, pixel for pixel
        (:func:`~transferscope.data.images.load_rgb_tensor`)."""
        return self._decode(load_rgb_tensor, index, min_side)

    def _decode(self, decoder: Callable, index: int, min_side: int | None):
        path = self.root / self.samples[index].path
        try:
            return decoder(path, min_side)
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

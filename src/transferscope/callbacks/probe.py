"""The fixed probe set of an audit during training: a seeded sample of target and source images,
decoded once per preprocessing and kept in memory for every epoch.

Chosen once (seeded, sorted indices), so every epoch sees the same images and the monitor's
numbers equal a full audit's on the same images (:func:`probe_sets`); decoded once (the tensors
are cached per transform), so an epoch's audit costs forward passes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from transferscope.data.image_set import ImageSet
from transferscope.data.transforms import describe_transform
from transferscope.errors import ConfigError

__all__ = ["DecodedProbe", "probe_sets", "sample_indices"]


def sample_indices(n_items: int, n: int | None, seed: int) -> list[int]:
    """``n`` sorted indices of ``range(n_items)`` drawn without replacement with ``seed``
    (all of them when ``n`` is None or at least ``n_items``).

    Example:
        >>> sample_indices(5, None, 0)
        [0, 1, 2, 3, 4]
        >>> sample_indices(10, 3, 0) == sample_indices(10, 3, 0)
        True
        >>> len(sample_indices(10, 3, 1)), len(set(sample_indices(10, 3, 1)))
        (3, 3)
    """
    if n is None or n >= n_items:
        return list(range(n_items))
    if n < 1:
        raise ConfigError(f"a probe needs at least 1 image, got {n}")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_items, generator=g)[:n].tolist())


def probe_sets(target: ImageSet, source: ImageSet | None, target_images: int | None,
               source_images: int | None, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """The probe's target and source images: seeded subsets (see :func:`sample_indices`).

    A full audit run on these two sets (``AuditContext(target_data=..., source_data=...)``)
    computes the same numbers as the monitor at the same image size.
    """
    if len(target) == 0:
        raise ConfigError(f"the monitor's target images ({target.root}) are empty")
    t = target.subset(sample_indices(len(target), target_images, seed))
    s = None
    if source is not None:
        s = source.subset(sample_indices(len(source), source_images, seed + 1))
    return t, s


@dataclass
class DecodedProbe:
    """Images of one probe set decoded with one transform: ``images (N, 3, H, W)`` float32 and
    ``labels (N,)``, on CPU, decoded once per transform (memoised in :attr:`cache`)."""

    data: ImageSet
    cache: dict = field(default_factory=dict, repr=False)

    def tensors(self, transform) -> tuple[torch.Tensor, torch.Tensor]:
        key = describe_transform(transform)
        if key not in self.cache:
            ds = self.data.with_transform(transform)
            xs, ys = zip(*(ds[i] for i in range(len(ds))))
            self.cache[key] = (torch.stack([torch.as_tensor(x) for x in xs]).float(),
                               torch.as_tensor(ys, dtype=torch.long))
        return self.cache[key]

    def batches(self, transform, batch_size: int):
        """``(x, y)`` batches in order."""
        x, y = self.tensors(transform)
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]

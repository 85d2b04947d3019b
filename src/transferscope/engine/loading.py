"""Data loaders that keep up with the model: decoding workers sized to the machine.

Decoding a JPEG and resizing it costs about as much as efficientnet_lite0's forward pass at
128 px on one CPU core (see benchmarks/RESULTS.md, "Scaling"), so in the main process the
decoder and the model take turns. :func:`make_loader` decodes in worker processes instead:

* how many: :func:`auto_workers` - none for a few batches or images (starting a worker
  costs more than it saves) or on one core; else half the cores this process may use
  (``os.sched_getaffinity``) up to 4 cores, all but two of them above, at most 8. Each worker runs with one
  torch thread (PyTorch sets this in every DataLoader worker), the main process keeps its
  ``torch.get_num_threads()`` for the model.
* ``pin_memory`` on CUDA, so ``x.to(device, non_blocking=True)`` overlaps the copy with the
  previous batch's compute; ``persistent_workers`` where the caller reuses a loader (the
  validation loader of every epoch).

* the heap: :func:`~transferscope.engine._memory.tune_heap` once per process, so the model's
  activation buffers are reused rather than mapped and zeroed for every batch (1.28x at
  224 px on CPU; a worker process measured faster than decoding on threads).

Batches come out in the sampler's order whatever the number of workers, and every worker
runs the same deterministic transform, so inference results do not depend on it.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch.utils.data import DataLoader, TensorDataset

from transferscope.config import usable_cpus
from transferscope.data.image_set import ImageSet
from transferscope.engine._memory import tune_heap

__all__ = ["auto_workers", "decode_once", "DECODE_ONCE_BYTES", "DecodedOnce", "make_loader",
           "MAX_WORKERS", "MIN_BATCHES_FOR_WORKERS", "MIN_ITEMS_FOR_WORKERS", "WORKERS_ENV"]

#: largest decoded set :func:`decode_once` keeps in memory (float32 inputs); above it every
#: pass decodes again, as without it
DECODE_ONCE_BYTES = 1 << 30

MIN_BATCHES_FOR_WORKERS = 4  # fewer: a worker's start-up (fork + first batch) is not repaid
MIN_ITEMS_FOR_WORKERS = 256  # nor for a few images (0.1-0.3 s start-up; ~2 ms per decode)
MAX_WORKERS = 8
WORKERS_ENV = "TRANSFERSCOPE_WORKERS"


def auto_workers(n_items: int, batch_size: int, cpus: int | None = None) -> int:
    """Decoding worker processes for a loader over ``n_items`` in batches of ``batch_size``.

    ``TRANSFERSCOPE_WORKERS=N`` overrides the choice (0: decode in the main process).

    Example:
        >>> auto_workers(153, 16, cpus=2), auto_workers(5000, 16, cpus=2)
        (0, 1)
        >>> auto_workers(5000, 16, cpus=8), auto_workers(5000, 16, cpus=64)
        (6, 8)
    """
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            from transferscope.errors import ConfigError

            raise ConfigError(f"{WORKERS_ENV}={env!r}: give a whole number of worker "
                              "processes (0: decode in the main process)") from None
    if n_items < MIN_ITEMS_FOR_WORKERS or -(-n_items // max(1, batch_size)) < \
            MIN_BATCHES_FOR_WORKERS:
        return 0
    cpus = usable_cpus() if cpus is None else cpus
    if cpus < 2:
        return 0  # one core: a worker only adds copies between processes
    return min(MAX_WORKERS, cpus // 2 if cpus <= 4 else cpus - 2)


def make_loader(dataset, batch_size: int, *, num_workers: int | None = None,
                device: str | torch.device = "cpu", persistent: bool = False,
                **kwargs) -> DataLoader:
    """A ``DataLoader`` over ``dataset``: ``num_workers=None`` chooses :func:`auto_workers`;
    pinned memory on CUDA; ``persistent`` keeps the workers between passes over it.
    Other keyword arguments (``shuffle``, ``sampler``, ``generator``) go to ``DataLoader``."""
    tune_heap()  # every pass over data starts here: activations reuse heap memory (_memory.py)
    workers = auto_workers(len(dataset), batch_size) if num_workers is None else num_workers
    extra = {"persistent_workers": True} if persistent and workers > 0 else {}
    if workers > 0:
        extra["prefetch_factor"] = 4  # the next batches wait decoded while the model runs
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      pin_memory=torch.device(device).type == "cuda", **extra, **kwargs)


@dataclasses.dataclass
class DecodedOnce(ImageSet):
    """An :class:`ImageSet` whose samples are decoded and transformed once per transform and
    then served from memory: several models that preprocess alike and run one after another
    (ranking candidates, built one at a time) share one decoding pass. Same samples, digest
    and cache keys as the set it wraps; see :func:`decode_once`."""

    max_bytes: int = DECODE_ONCE_BYTES
    num_workers: int | None = None
    progress: bool | None = None
    memo: dict = dataclasses.field(default_factory=dict, repr=False)

    def with_transform(self, transform):
        from transferscope.data.transforms import describe_transform

        plain = ImageSet(self.root, self.samples, self.classes, self.label_space,
                         self.skipped, transform)
        if transform is None or not len(self):
            return plain
        desc = describe_transform(transform)
        if desc not in self.memo:
            first = plain[0][0]
            size = first.element_size() * first.numel() * len(self)
            if size > self.max_bytes:
                return plain  # too large to hold: decoded per pass, as without this wrapper
            while self.memo and size + sum(t.tensors[0].nbytes for t in self.memo.values()) \
                    > self.max_bytes:
                self.memo.pop(next(iter(self.memo)))  # the oldest goes: memory stays bounded
            self.memo[desc] = self._decode_all(plain)
        return self.memo[desc]

    def _decode_all(self, plain: ImageSet) -> TensorDataset:
        from transferscope._progress import progress_bar

        xs, ys = [], []
        loader = make_loader(plain, 32, num_workers=self.num_workers)
        with progress_bar(len(plain), f"decode {self.root.name} once", self.progress) as advance:
            for x, y in loader:
                xs.append(x)
                ys.append(y)
                advance(len(y))
        return TensorDataset(torch.cat(xs), torch.cat(ys))


def decode_once(data: ImageSet, *, max_bytes: int = DECODE_ONCE_BYTES,
                num_workers: int | None = None, progress: bool | None = None) -> DecodedOnce:
    """``data`` as a :class:`DecodedOnce`: the first pass under a transform decodes every
    image into memory (when the transformed set fits ``max_bytes``), later passes under the
    same transform read the tensors (items equal to ``data.with_transform(t)[i]``).

    Example:
        >>> import tempfile, PIL.Image, pathlib
        >>> from transferscope.data import image_folder
        >>> from transferscope.data.transforms import IMAGENET_NORM, eval_transform
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for c in ("a", "b"):
        ...     (root / c).mkdir()
        ...     PIL.Image.new("RGB", (40, 30), (9, 99, 199)).save(root / c / "x.png")
        >>> data = image_folder(root)
        >>> once = decode_once(data, progress=False)
        >>> tf = eval_transform(IMAGENET_NORM, 16)
        >>> a, b = once.with_transform(tf), once.with_transform(tf)
        >>> a is b, torch.equal(a[1][0], data.with_transform(tf)[1][0]), once.digest == data.digest
        (True, True, True)
    """
    return DecodedOnce(data.root, data.samples, data.classes, data.label_space, data.skipped,
                       data.transform, max_bytes=max_bytes, num_workers=num_workers,
                       progress=progress)

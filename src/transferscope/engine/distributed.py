"""Runs over several processes with PyTorch's own engine: ``torchrun`` + ``torch.distributed``.

Nothing to configure: a process started by ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) joins the process group the first time
:func:`setup` is called (by :func:`~transferscope.engine.train` or
:func:`~transferscope.engine.predict`). The backend is NCCL when CUDA is available (each process
on GPU ``LOCAL_RANK``), else gloo on CPU; ``TRANSFERSCOPE_DIST_BACKEND=gloo|nccl`` overrides it.
With one process (no torchrun, or ``--nproc_per_node=1``) every helper here is a no-op and
results are exactly those of the single-process code.

* training: data-parallel (``DistributedDataParallel``); each epoch's shuffled order is the
  single-process loader's, split over ranks like ``DistributedSampler``, so one step's global
  batch (W processes x per-process batch B) holds the images of a single-process batch of
  W*B; only rank 0 writes files.
* inference: each rank runs a contiguous, batch-aligned shard; the outputs are gathered in data
  order on every rank, so each batch, and therefore the cache entry, equals the single-process one.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from transferscope.errors import ConfigError

__all__ = ["BACKEND_ENV", "BACKENDS", "barrier", "cleanup", "data_parallel", "epoch_order",
           "everywhere", "gather_shards", "is_main", "rank_seed", "RankShare", "setup", "shard",
           "shard_indices", "SINGLE", "sum_across", "sync_buffers", "train_loader", "World",
           "world", "writes_cache"]

BACKEND_ENV = "TRANSFERSCOPE_DIST_BACKEND"
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def device(self) -> torch.device:
        """The device this process computes on: its GPU under NCCL, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" \
            else torch.device("cpu")


SINGLE = World()


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {name}={value!r} is "
                          "not a number; start the command with torchrun (e.g. `torchrun "
                          "--nproc_per_node=2 -m transferscope.cli ...`) or unset WORLD_SIZE"
                          ) from None


def setup() -> World:
    """Join torchrun's process group once per process; a world of 1 outside torchrun."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():  # ours, or one the caller started
        return world()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return SINGLE
    size, rank, local = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK")
    backend = os.environ.get(BACKEND_ENV) or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in BACKENDS:
        raise ConfigError(f"{BACKEND_ENV}={backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "nccl":
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ConfigError(f"{BACKEND_ENV}=nccl needs GPU {local} (LOCAL_RANK) but this "
                              f"machine has {torch.cuda.device_count()}; use fewer processes "
                              f"per node or {BACKEND_ENV}=gloo")
        torch.cuda.set_device(local)
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run one process")
    dist.init_process_group(backend, rank=rank, world_size=size)
    atexit.register(cleanup)
    if rank != 0:  # one progress display and one log, from rank 0
        os.environ["TRANSFERSCOPE_PROGRESS"] = "0"
    return world()


def world() -> World:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return World(dist.get_world_size(), dist.get_rank(), local, dist.get_backend())


def cleanup() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 (and in a single process): the process that writes files."""
    return world().rank == 0


def barrier() -> None:
    if world().size > 1:
        torch.distributed.barrier()


def rank_seed(seed: int) -> int:
    """Seed for this rank's own random streams (augmentation, dropout): ``seed`` on rank 0."""
    return (seed + world().rank * 2**32) % 2**63


def everywhere(flag: bool) -> bool:
    """True if ``flag`` holds on every rank (keeps ranks on the same path, e.g. cache hits)."""
    w = world()
    if w.size == 1:
        return flag
    t = torch.tensor([int(flag)], device=w.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t.item())


def sum_across(*values: float) -> list[float]:
    """Sums over ranks of per-rank ``values`` (float64), e.g. loss sums and counts."""
    w = world()
    if w.size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=w.device)
    torch.distributed.all_reduce(t)
    return t.tolist()


# -- training ---------------------------------------------------------------------------------

def epoch_order(n: int, seed: int) -> list[int]:
    """The order in which the single-process training loader visits ``range(n)``: its shuffle
    (run through ``DataLoader`` itself, which draws its base seed from the same generator
    before the permutation, so this is not ``randperm(n)`` of ``seed``)."""
    loader = DataLoader(range(n), batch_size=max(n, 1), shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return [i for batch in loader for i in batch.tolist()]


class RankShare(Sampler[int]):
    """This rank's share of :func:`epoch_order`, split as ``DistributedSampler`` splits (every
    ``size``-th index, padded by repetition to a multiple of ``size``): step ``k``'s batches of
    B on all ranks together hold exactly the single-process batch ``k`` of size W*B."""

    def __init__(self, n: int, seed: int, rank: int, size: int):
        order = epoch_order(n, seed)
        total = -(-n // size) * size
        self.indices = (order * size)[:total][rank::size]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(dataset, batch_size: int, seed: int, num_workers: int = 0,
                 pin_memory: bool | None = None) -> DataLoader:
    """The epoch's shuffled loader: single-process, or this rank's :class:`RankShare` of the
    same order (``seed`` is the epoch's seed: a new order per epoch, like ``set_epoch``).
    ``pin_memory`` (default: when the world computes on CUDA) for non-blocking copies."""
    w = world()
    pin = w.device.type == "cuda" if pin_memory is None else pin_memory
    if w.size == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                          generator=torch.Generator().manual_seed(seed), pin_memory=pin)
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                      pin_memory=pin,
                      sampler=RankShare(len(dataset), seed, w.rank, w.size))


class _FeaturesAndLogits(nn.Module):
    """One forward through DDP, so its gradient hooks see the training step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)
        return features, self.model.forward_head(features)


def data_parallel(model: nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``step(x) -> (features, logits)``; under torchrun through ``DistributedDataParallel``
    (gradients averaged over ranks; rank 0's weights and buffers broadcast when wrapped)."""
    w = world()
    if w.size == 1:
        return _FeaturesAndLogits(model).forward
    from torch.nn.parallel import DistributedDataParallel

    ids = [w.local_rank] if w.device.type == "cuda" else None
    return DistributedDataParallel(_FeaturesAndLogits(model), device_ids=ids)


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics of its own last batch)."""
    if world().size > 1:
        for b in model.buffers():
            torch.distributed.broadcast(b.data, src=0)


# -- sharded inference ------------------------------------------------------------------------

def shard(n: int, batch_size: int, rank: int | None = None, size: int | None = None) -> range:
    """This rank's contiguous share of ``range(n)``, cut at batch boundaries: its batches are
    exactly the single-process run's batches (a rank may get none when batches < ranks)."""
    w = world()
    rank, size = (w.rank if rank is None else rank), (w.size if size is None else size)
    batches = -(-n // batch_size)
    lo, hi = batches * rank // size, batches * (rank + 1) // size
    return range(min(lo * batch_size, n), min(hi * batch_size, n))


def gather_shards(parts: dict[str, list[torch.Tensor]], n: int, batch_size: int
                  ) -> dict[str, torch.Tensor]:
    """Concatenate per-batch outputs (name -> list of ``(b, ...)`` tensors) of every rank's
    :func:`shard` into ``(n, ...)`` tensors in data order, on every rank (CPU)."""
    w = world()
    if w.size == 1:
        return {k: torch.cat(v) for k, v in parts.items()}
    dist = torch.distributed
    # shapes and dtypes, from ranks that ran a batch: small tuples of our own ranks, pickled
    meta = {k: (tuple(v[0].shape[1:]), str(v[0].dtype)[6:]) for k, v in parts.items() if v}
    metas: list = [None] * w.size
    dist.all_gather_object(metas, meta)
    known = {k: m for r in metas for k, m in r.items()}
    lengths = [len(shard(n, batch_size, r, w.size)) for r in range(w.size)]
    out = {}
    for k in parts:
        shape, dtype = known[k]
        dtype = getattr(torch, dtype)
        mine = torch.cat(parts[k]) if parts[k] else torch.empty((0, *shape), dtype=dtype)
        pad = torch.zeros((max(lengths), *shape), dtype=dtype, device=w.device)
        pad[:len(mine)] = mine.to(w.device)
        got = [torch.empty_like(pad) for _ in range(w.size)]
        dist.all_gather(got, pad)
        out[k] = torch.cat([g[:m] for g, m in zip(got, lengths)]).cpu()
    return out


def writes_cache() -> bool:
    """Whether this process writes shared results: one per machine (``LOCAL_RANK`` 0), so a
    cache on local disk is filled on each node; the entries are identical (written atomically)."""
    return world().local_rank == 0


def shard_indices(n: int, batch_size: int) -> range | None:
    """A ``DataLoader`` sampler over this rank's :func:`shard`; ``None`` in a single process."""
    return shard(n, batch_size) if world().size > 1 else None

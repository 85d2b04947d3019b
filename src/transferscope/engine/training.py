"""Training runs: fine-tuning or training from scratch, resumable and deterministic on CPU.

A run directory holds::

    config.json              resolved config (recipe included) and library versions
    data.json                train/val manifest digests, class names, skipped files
    init_random.safetensors  theta_r: the random initial weights for this seed
    init.safetensors         the weights training started from (theta_r + loaded --init;
                             a hard link to init_random.safetensors when they are equal)
    checkpoints/epoch_NNNN.safetensors   model after an epoch: by default only the last one
                             (for resuming; a hard link to model.safetensors once the run is
                             done) and the epochs asked for (``keep_epochs``, e.g. for
                             checkpoint-transfer); ``keep_checkpoints="all"`` or ``N`` (last N)
    checkpoints/state.pt     optimiser + scheduler after the last finished epoch (the only
                             pickle: read with weights_only=True, content-hash checked)
    metrics.json             per epoch: train loss/acc, val loss/acc, lr (same seed: same bytes)
    timings.json             seconds per epoch (volatile, kept out of metrics.json)
    model.safetensors        the final model

Each epoch re-seeds every random source from (seed, epoch), so an interrupted run resumed
from its last epoch checkpoint ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from transferscope import __version__
from transferscope._io import atomic_write_json
from transferscope._lock import writer_lock
from transferscope._progress import log, progress_bar
from transferscope.engine import distributed
from transferscope.engine._disk import parse_keep
from transferscope.engine.loading import make_loader
from transferscope.engine import training_steps as steps
from transferscope.engine.recipes import Recipe
from transferscope.engine.training_data import (  # noqa: F401 (select_subset: public here too)
    _epoch_seed, _evaluate, _recalibrate, select_subset, training_transforms)
from transferscope.errors import ConfigError, TransferscopeError
from transferscope.models.base import TransferModel
from transferscope.engine.device import check_amp, resolve_device
from transferscope.models.io import load_model
from transferscope.models.registry import create_model

from transferscope.engine.training_steps import STATE_FILE  # noqa: E402,F401 (public here)

__all__ = ["load_run", "train", "TrainConfig", "TrainingHook", "TrainResult"]


class TrainConfig(BaseModel):
    """Everything that determines a training run's result."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    init: str = "imagenet"
    data: str
    train_split: str = "train"
    val_split: str = "val"
    recipe: Recipe
    seed: int = 0
    channels_last: bool = False
    data_fraction: float = Field(1.0, gt=0, le=1)
    max_classes: int | None = Field(None, ge=2)
    block_shuffle: int | Literal["*"] | None = None
    precise_bn: bool | None = None  # re-estimate BN statistics each epoch (None: see below)
    remedy: dict | None = None  # settings of the TrainingHook the run used (transferscope.remedies)
    # "bf16": training forward passes under bfloat16 autocast (CPUs with AVX512-BF16/AMX,
    # GPUs); "fp16": float16 autocast with a gradient scaler (CUDA only); weights, optimiser,
    # loss and the validation pass stay fp32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    def recalibrates_bn(self, model: torch.nn.Module | None = None) -> bool:
        """``precise_bn``, or by default: for random init, and for models whose BatchNorm
        momentum is below 0.05 (EfficientNet-Lite's 0.01 lags behind fine-tuning too)."""
        if self.precise_bn is not None:
            return self.precise_bn
        slow = model is not None and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.momentum is not None
            and m.momentum < 0.05 for m in model.modules())
        return self.init == "random" or slow


class TrainingHook:
    """Changes to plain fine-tuning (paper 001's remedies): subclass and override what you need.

    ``setup`` runs once per call of :func:`train` (``fresh`` only when the run starts, before
    ``init.safetensors`` is written: the place to edit the starting weights); ``batch`` may
    replace a training batch; ``loss`` adds a term to the cross-entropy; ``after_step`` runs
    after each optimiser step. ``generator`` is re-seeded per epoch, so resumed runs replay.
    """

    settings: dict = {}

    def setup(self, model: TransferModel, train_set, image_size: int, fresh: bool) -> None:
        pass

    def batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def loss(self, model: TransferModel, x: torch.Tensor, y: torch.Tensor,
             features: torch.Tensor, logits: torch.Tensor, generator: torch.Generator
             ) -> torch.Tensor | None:
        return None

    def after_step(self, model: TransferModel) -> None:
        pass


@dataclass
class TrainResult:
    run_dir: Path
    model: TransferModel
    metrics: list[dict]

    @property
    def final_val_accuracy(self) -> float:
        return self.metrics[-1]["val_acc"]


def _check_existing(out: Path, config: TrainConfig, resume: bool) -> None:
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        return
    if not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose "
                          "another --out")
    old = json.loads(cfg_path.read_text())["config"]
    new = json.loads(config.model_dump_json())
    # a setting added after the run was started has its default there (e.g. precision)
    fields = TrainConfig.model_fields
    old = {**{k: new[k] for k in new if k not in old and new[k] == fields[k].default}, **old}
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ConfigError(f"{out} was started with other settings ({', '.join(diff)} differ); "
                          "resume with the same settings or choose another --out")


def train(config: TrainConfig, out: str | os.PathLike, *, wait: bool | None = None,
          **kwargs) -> TrainResult:
    """:func:`_train` holding the run directory's writer lock (``transferscope._lock``).

    A second process on the same ``out`` waits for the first (printing which pid and host
    hold it), then resumes or finds the run complete - it never re-runs finished epochs beside
    it; ``wait=False`` (or ``TRANSFERSCOPE_NO_WAIT=1``) makes it fail at once with a
    :class:`~transferscope._lock.LockedError` naming the holder. Under torchrun rank 0 holds it.
    """
    check_amp(config.precision,  # a missing GPU (or fp16 on a CPU) fails before the run exists
              resolve_device(kwargs.get("device", "auto")))
    if distributed.setup().rank != 0:
        return _train(config, out, **kwargs)
    fresh = not Path(out).exists()
    try:
        with writer_lock(out, f"training {config.arch} into {out}", wait=wait):
            return _train(config, out, **kwargs)
    except TransferscopeError:
        if fresh:
            _remove_if_empty(Path(out))  # a run that failed before its first epoch: no trace
        raise


def _remove_if_empty(out: Path) -> None:
    """Remove ``out`` if it holds nothing but empty folders and lock files."""
    if not out.is_dir():
        return
    files = [p for p in out.rglob("*") if p.is_file()]
    if all(p.name.endswith(".lock") for p in files):
        import shutil

        shutil.rmtree(out, ignore_errors=True)


def _train(config: TrainConfig, out: str | os.PathLike, *, resume: bool = False,
           data_root: str | None = None, num_workers: int = 0,
           keep_checkpoints: int | str | None = None, keep_epochs=(),
           progress: bool | None = None, hook: TrainingHook | None = None,
           on_epoch=None, device: str | torch.device | None = "auto",
           monitor=None) -> TrainResult:
    """Train ``config.arch`` on ``config.data`` and write the run directory ``out``.

    Disk: besides the final weights and theta_r, only the last epoch checkpoint is kept (to
    resume; hard-linked to the final model at the end), plus the epochs in ``keep_epochs``
    (e.g. those checkpoint-transfer, paper 003 section 3.5, starts from);
    ``keep_checkpoints="all"`` keeps every epoch, ``keep_checkpoints=N`` the last N.
    ``on_epoch(row)`` is called with each epoch's metrics row (e.g. a tracker's logger).
    ``monitor``: an object with ``step(model, epoch, step)`` and ``close()`` (a
    :class:`transferscope.callbacks.AuditMonitor`), called on rank 0 before the first epoch of
    a fresh run (epoch 0), after every epoch (outside the epoch's timing) and at the end.
    ``device``: ``"auto"`` (CUDA when present, the process's GPU under torchrun), ``"cpu"``,
    ``"cuda[:N]"`` or ``"mps"``.

    Example (a two-class set of 24 px images, one epoch; a fraction of a second):
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from transferscope.engine import TrainConfig, get_recipe, train
        >>> tmp = tempfile.TemporaryDirectory()
        >>> root = Path(tmp.name)
        >>> for split in ("train", "val"):
        ...     for c, rgb in (("ants", (200, 40, 40)), ("bees", (40, 40, 200))):
        ...         (root / split / c).mkdir(parents=True)
        ...         for i in range(4):
        ...             Image.new("RGB", (24, 24), (rgb[0], 10 * i, rgb[2])).save(
        ...                 root / split / c / f"{i}.png")
        >>> cfg = TrainConfig(arch="baseline_cnn", init="random", data=str(root),
        ...                   recipe=get_recipe("quick", epochs=1, image_size=32, batch_size=4))
        >>> result = train(cfg, root / "run", progress=False)
        >>> [m["epoch"] for m in result.metrics], 0.0 <= result.metrics[-1]["val_acc"] <= 1.0
        ([1], True)
        >>> sorted(p.name for p in (root / "run").glob("*.safetensors"))
        ['init.safetensors', 'init_random.safetensors', 'model.safetensors']
        >>> tmp.cleanup()

        Paper 000's fine-tuning run (skipped here: needs the hymenoptera data set in the data
        root and minutes of CPU time):

        >>> cfg = TrainConfig(arch="efficientnet_lite0", init="imagenet", data="hymenoptera",
        ...                   recipe=get_recipe("paper000-finetune", epochs=5))  # doctest: +SKIP
        >>> train(cfg, "runs/ft").final_val_accuracy  # doctest: +SKIP
        0.94...
    """
    out = Path(out)
    keep_last, keep_epochs = parse_keep(keep_checkpoints), {int(e) for e in keep_epochs}
    world = distributed.setup()  # under torchrun: data-parallel, files written by rank 0
    dev = resolve_device(device)  # a missing GPU fails here, before any data is read
    if (config.remedy is None) != (hook is None or not hook.settings):
        raise ConfigError("a run with a remedy needs its training hook: start it with "
                          "transferscope.remedies.fine_tune (or `transferscope remedies`)")
    _check_existing(out, config, resume)
    recipe = config.recipe
    train_set, val_set = steps.load_data(config, data_root)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    done = steps.finished_run(out, recipe.epochs)
    if done is not None:
        log(f"{out}: run already complete")
        return TrainResult(out, *done)

    torch.manual_seed(config.seed)
    model = create_model(config.arch, train_set.num_classes, init="random",
                         image_size=recipe.image_size, class_names=train_set.classes)
    distributed.barrier()  # every rank has looked at `out` before rank 0 writes there
    if not (out / "config.json").exists() and world.rank == 0:
        steps.start_run(model, config, out, train_set, val_set, hook, __version__)
    distributed.barrier()  # rank 0 has written the run's start
    model.to(dev)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    state = steps.OptimState.create(model, recipe, config.precision, dev)
    start, metrics = steps.restore(model, state, out, ckpt_dir)
    if hook is not None:
        hook.setup(model, train_set, recipe.image_size, fresh=False)
    step = distributed.data_parallel(model)  # (features, logits); DDP under torchrun
    recalibrate = config.recalibrates_bn(model)
    tf_train, tf_val = training_transforms(model.norm, recipe.image_size, recipe.augment,
                                           config.block_shuffle, config.seed)
    val_loader = make_loader(val_set.with_transform(tf_val), recipe.batch_size,  # every epoch
                             num_workers=num_workers, device=dev, persistent=True,
                             sampler=distributed.shard_indices(len(val_set), recipe.batch_size))
    if len(train_set) < recipe.batch_size:
        log(f"note: {len(train_set)} training images, fewer than one batch of "
            f"{recipe.batch_size}")
    if monitor is not None and start == 0 and world.rank == 0:
        monitor.step(model, epoch=0, step=0)  # the state training starts from
    with progress_bar(recipe.epochs, f"train {config.arch} ({config.init}) on "
                      f"{Path(config.data).name}", progress) as epoch_bar:
        epoch_bar(start)
        for epoch in range(start + 1, recipe.epochs + 1):
            seed = _epoch_seed(config.seed, epoch)
            torch.manual_seed(distributed.rank_seed(seed))
            loader = distributed.train_loader(train_set.with_transform(tf_train),
                                              recipe.batch_size, seed, num_workers,
                                              pin_memory=dev.type == "cuda")
            t0 = time.perf_counter()
            row = steps.train_epoch(model, step, loader, state, hook, config, dev, progress,
                                    epoch, len(train_set))
            lr = state.optimizer.param_groups[0]["lr"]
            state.scheduler.step()
            if recalibrate:
                _recalibrate(model, train_set.with_transform(tf_val), recipe.batch_size,
                             _epoch_seed(config.seed, epoch), config.channels_last)
            val_loss, val_acc = _evaluate(model, val_loader, config.channels_last)
            metrics.append({"epoch": epoch, **row, "val_loss": val_loss, "val_acc": val_acc,
                            "lr": lr})
            if world.rank == 0:  # the only writer under torchrun
                steps.checkpoint(model, state, out, ckpt_dir, epoch, metrics, keep_last,
                                 keep_epochs)
                _record_seconds(out / "timings.json", epoch, time.perf_counter() - t0)
                if on_epoch is not None:
                    on_epoch(metrics[-1])
                if monitor is not None:
                    monitor.step(model, epoch=epoch, step=epoch * len(loader))
            epoch_bar(1, description=f"train {config.arch}: epoch {epoch} val_acc {val_acc:.3f}")
    if world.rank == 0:
        if monitor is not None:
            monitor.close()
        steps.finish(model, out, ckpt_dir, recipe.epochs)
    distributed.barrier()  # every rank returns after the run is complete on disk
    return TrainResult(out, model.cpu(), metrics)


def _record_seconds(path: Path, epoch: int, seconds: float) -> None:
    try:
        timings = json.loads(path.read_text())
    except (OSError, ValueError):
        timings = {}
    timings[str(epoch)] = round(seconds, 3)
    atomic_write_json(path, timings)


def load_run(run_dir: str | os.PathLike, which: str = "final") -> TransferModel:
    """Load a run's ``final`` model, its ``init``, its ``init_random`` or epoch ``N``."""
    run_dir = Path(run_dir)
    files = {"final": "model.safetensors", "init": "init.safetensors",
             "init_random": "init_random.safetensors"}
    name = files.get(which) or f"checkpoints/epoch_{int(which):04d}.safetensors"
    return load_model(run_dir / name)

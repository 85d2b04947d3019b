"""The pieces of a training run that :func:`transferscope.engine.training._train` puts together:
data, the run's start on disk, optimiser state and resuming, one epoch, the epoch checkpoint and
the final model. Each is small enough to read (and test) on its own."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from transferscope._io import (atomic_write_json, load_checked_state, save_checked_state,
                               tensors_sha256)
from transferscope._progress import log, progress_bar
from transferscope.data.folder import image_folder
from transferscope.engine import distributed
from transferscope.engine._disk import _link_or_copy, _prune
from transferscope.engine.device import amp_dtype, to_device
from transferscope.engine.training_data import _epoch_seed, select_subset
from transferscope.errors import ConfigError, DataError
from transferscope.models.io import load_model, save_model
from transferscope.models.registry import init_weights

__all__ = ["checkpoint", "finish", "finished_run", "load_data", "OptimState", "restore",
           "start_run", "STATE_FILE", "train_epoch"]

STATE_FILE = "state.pt"


def load_data(config, data_root):
    """The run's train and val sets (same classes, subset as configured, >= 2 classes)."""
    train_set = image_folder(config.data, config.train_split, data_root=data_root,
                             empty_classes="skip")  # skipped folders are listed in data.json
    val_set = image_folder(config.data, config.val_split, data_root=data_root,
                           empty_classes="skip")
    if train_set.classes != val_set.classes:
        raise ConfigError(f"{train_set.root} and {val_set.root} have different classes "
                          f"({train_set.classes} vs {val_set.classes})")
    train_set, val_set = select_subset(train_set, val_set, config.data_fraction,
                                       config.max_classes, config.seed)
    if len(train_set.classes) < 2:
        raise DataError(f"{train_set.root}: {len(train_set.classes)} class "
                        f"({', '.join(map(str, train_set.classes)) or 'none'}); a classifier "
                        "needs at least two classes (one folder or label per class)")
    return train_set, val_set


def finished_run(out: Path, epochs: int):
    """``(model, metrics)`` of a run directory that already holds all ``epochs``, else None."""
    if (out / "model.safetensors").exists() and (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text())
        if len(metrics) == epochs:
            return load_model(out / "model.safetensors"), metrics
    return None


def start_run(model, config, out: Path, train_set, val_set, hook, version: str) -> None:
    """Write the run's start (rank 0): theta_r, the initial weights (``config.init`` loaded,
    the hook's fresh setup), data.json and - last, so a run killed in setup redoes it -
    config.json."""
    theta_r = save_model(model, out / "init_random.safetensors", role="theta_r")
    init_weights(model, config.init)
    if hook is not None:
        hook.setup(model, train_set, config.recipe.image_size, fresh=True)
    if tensors_sha256(model.state_dict()) == theta_r:  # random init: same weights
        _link_or_copy(out / "init_random.safetensors", out / "init.safetensors")
    else:
        save_model(model, out / "init.safetensors", role="init")
    atomic_write_json(out / "data.json", {
        "train": {"root": str(train_set.root), "digest": train_set.digest,
                  "n": len(train_set), "counts": train_set.class_counts()},
        "val": {"root": str(val_set.root), "digest": val_set.digest, "n": len(val_set),
                "counts": val_set.class_counts()},
        "classes": train_set.classes,
        "skipped": [s.__dict__ for s in train_set.skipped + val_set.skipped]})
    atomic_write_json(out / "config.json", {
        "config": json.loads(config.model_dump_json()),
        "preprocessing": model.norm.as_dict(), "builder": model.builder,
        "versions": {"transferscope": version, "torch": torch.__version__,
                     "python": platform.python_version()}})


@dataclass
class OptimState:
    """Optimiser, schedule, loss scaler and autocast of a run (what a checkpoint saves)."""

    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    autocast: torch.autocast

    @classmethod
    def create(cls, model, recipe, precision: str, dev: torch.device) -> "OptimState":
        optimizer = recipe.make_optimizer(model.parameters())
        dtype = amp_dtype(precision)
        # fp16 gradients underflow without loss scaling; disabled, the scaler passes through
        return cls(optimizer, recipe.make_scheduler(optimizer),
                   torch.amp.GradScaler(dev.type, enabled=precision == "fp16"),
                   torch.autocast(dev.type, dtype=dtype or torch.bfloat16,
                                  enabled=dtype is not None))

    def state_dict(self, epoch: int) -> dict:
        return {"epoch": epoch, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {})}


def restore(model, state: OptimState, out: Path, ckpt_dir: Path) -> tuple[int, list[dict]]:
    """Load the last finished epoch (weights, optimiser, schedule, scaler) when there is one,
    else the initial weights; returns ``(epochs done, their metrics)``."""
    state_path = ckpt_dir / STATE_FILE
    if not state_path.exists():
        model.load_state_dict(load_model(out / "init.safetensors").state_dict())
        return 0, []
    saved = load_checked_state(state_path)  # weights_only=True and hash-verified
    if "scaler" in saved:
        state.scaler.load_state_dict(saved["scaler"])
    start = int(saved["epoch"])
    model.load_state_dict(load_model(ckpt_dir / f"epoch_{start:04d}.safetensors").state_dict())
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    log(f"{out}: resuming after epoch {start}")
    return start, json.loads((out / "metrics.json").read_text())[:start]


def train_epoch(model, step, loader, state: OptimState, hook, config, dev, progress,
                epoch: int, n_images: int) -> dict:
    """One epoch of optimiser steps; returns ``{"train_loss", "train_acc"}`` over all ranks.

    ``step(x) -> (features, logits)`` is the (data-parallel) forward; the hook's generator is
    seeded from (seed, epoch), so a resumed run replays the same batches and hook draws."""
    hook_gen = torch.Generator().manual_seed(
        distributed.rank_seed(_epoch_seed(config.seed, epoch)) + 1)
    model.train()
    loss_sum, correct, n = 0.0, 0, 0
    with progress_bar(n_images, f"epoch {epoch}", progress) as batch_bar:
        for x, y in loader:
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if hook is not None:
                x, y = hook.batch(x, y, hook_gen)
            with state.autocast:  # bf16: forward in bfloat16, weights and loss in fp32
                features, logits = step(to_device(x, dev))
            features, logits = features.float(), logits.float()
            y = to_device(y, dev)
            loss = torch.nn.functional.cross_entropy(logits, y)
            if hook is not None:
                extra = hook.loss(model, x, y, features, logits, hook_gen)
                loss = loss if extra is None else loss + extra
            state.optimizer.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
            state.scaler.step(state.optimizer)
            state.scaler.update()
            if hook is not None:
                hook.after_step(model)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
            batch_bar(len(y))
    loss_sum, correct, n = distributed.sum_across(loss_sum, correct, n)
    distributed.sync_buffers(model)  # rank 0's BatchNorm statistics on every rank
    return {"train_loss": loss_sum / n, "train_acc": correct / n}


def checkpoint(model, state: OptimState, out: Path, ckpt_dir: Path, epoch: int,
               metrics: list[dict], keep_last, keep_epochs) -> None:
    """After an epoch (rank 0): its weights, metrics.json, then the optimiser state (a crash in
    between resumes from the previous epoch), then old checkpoints pruned."""
    save_model(model, ckpt_dir / f"epoch_{epoch:04d}.safetensors", epoch=str(epoch))
    atomic_write_json(out / "metrics.json", metrics)
    save_checked_state(ckpt_dir / STATE_FILE, state.state_dict(epoch))
    _prune(ckpt_dir, epoch, keep_last, keep_epochs)


def finish(model, out: Path, ckpt_dir: Path, epochs: int) -> None:
    """The final model; the last epoch checkpoint becomes a link to it (one file on disk)."""
    save_model(model, out / "model.safetensors", role="final")
    last = ckpt_dir / f"epoch_{epochs:04d}.safetensors"
    if last.exists():
        _link_or_copy(out / "model.safetensors", last)

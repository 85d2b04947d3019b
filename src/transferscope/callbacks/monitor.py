"""``AuditMonitor``: a light audit of a model while it trains, for any training loop.

    monitor = AuditMonitor(source, "hymenoptera", out="runs/ft")     # source: the pretrained model
    monitor.step(model, epoch=0)           # before training: the pretrained state
    for epoch in range(1, epochs + 1):
        train_one_epoch(model)
        monitor.step(model, epoch)         # every ``every`` epochs: metrics -> monitor.jsonl
    monitor.close()                        # thresholds crossed -> monitor_summary.json

Each evaluation runs the registered metrics (:mod:`.metrics`) on a fixed probe set
(:mod:`.probe`) in eval mode without gradients; the model's train/eval modes are restored, no
hook stays attached, and nothing grows with the epochs but one JSON line per evaluation. Under
DDP only rank 0 computes and writes. ``transferscope audit`` of a run directory holding
``monitor.jsonl`` adds a "during training" section (analysis ``training_curves``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from transferscope.analyses.training_curves import (MONITOR_FILE, SUMMARY_FILE, crossings,
                                                    parse_threshold)
from transferscope.callbacks.metrics import MONITOR_METRICS, ProbeState, check_metrics
from transferscope.callbacks.probe import DecodedProbe, probe_sets
from transferscope.callbacks.view import as_transfer_model
from transferscope.data.image_set import ImageSet
from transferscope.errors import ConfigError

__all__ = ["AuditMonitor", "DEFAULT_METRICS", "MonitorOptions"]

DEFAULT_METRICS = ("target_accuracy", "retained_knowledge", "distance_to_pretrained",
                   "cka_to_pretrained")


class MonitorOptions(BaseModel):
    """Settings of an :class:`AuditMonitor` (the one home of its defaults)."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(1, ge=1, description="evaluate every N epochs (or steps)")
    metrics: tuple[str, ...] = Field(DEFAULT_METRICS, description="monitor metrics to compute")
    target_images: int | None = Field(48, ge=1, description="target probe images (None: all)")
    source_images: int | None = Field(50, ge=1, description="source probe images, one class "
                                      "each in imagenet-samples (None: all)")
    image_size: int = Field(128, ge=8, description="input size of the forward passes")
    batch_size: int = Field(32, ge=1, description="probe batch size")
    composites: int = Field(24, ge=1, description="composites of the 'distraction' metric")
    seed: int = Field(0, description="which probe images are drawn")
    thresholds: dict[str, str] = Field(
        default_factory=dict, description="metric key -> rule ('< 50', '>= 0.9'): the first "
        "evaluation where the rule holds is recorded, e.g. {'retained_knowledge/"
        "classes_recall_ge_50': '< 30'}")

    @field_validator("metrics")
    @classmethod
    def _known(cls, v):
        return tuple(check_metrics(v))

    @field_validator("thresholds")
    @classmethod
    def _rules(cls, v):
        for key, rule in v.items():
            parse_threshold(rule, key)
        return v


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def _unwrap(model):
    """The module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _load_data(data, what: str, source: bool) -> ImageSet:
    if isinstance(data, ImageSet):
        return data
    from transferscope.data import image_folder, source_images

    try:
        return source_images(data) if source else image_folder(data, "val")
    except ConfigError:
        raise
    except Exception as exc:  # one line naming the setting
        raise ConfigError(f"AuditMonitor {what}={data!r}: {exc}") from None


class AuditMonitor:
    """A light, incremental audit of a model during training (see the module docstring).

    Args:
        source: the pretrained model with its source head (a TransferModel, or any classifier
            ``nn.Module``); copied and kept aside at construction, so pass it before training
            changes it.
        target: the target's images (an ImageSet, or a data set name / folder / CSV: its val
            split).
        source_data: labelled source images (an ImageSet, or a name / folder for
            :func:`~transferscope.data.source_images`; default ``"imagenet-samples"`` under the
            data root; None: no retained-knowledge metric).
        out: folder of ``monitor.jsonl`` (one JSON object per evaluation) and
            ``monitor_summary.json``; None: kept in :attr:`history` only.
        options: :class:`MonitorOptions` or its fields as keyword arguments.
    """

    def __init__(self, source, target, *, source_data: Any = "imagenet-samples",
                 out: str | os.PathLike | None = None, options: MonitorOptions | None = None,
                 **kwargs):
        self.options = options or MonitorOptions(**kwargs)
        if options is not None and kwargs:
            raise ConfigError("give either options= or its fields as keywords, not both")
        src = as_transfer_model(_unwrap(source))
        self.pretrained = copy.deepcopy(src).eval().requires_grad_(False)
        target_set = _load_data(target, "target", source=False)
        src_set = (None if source_data is None or not {"retained_knowledge", "distraction"}
                   & set(self.options.metrics) else _load_data(source_data, "source_data", True))
        t, s = probe_sets(target_set, src_set, self.options.target_images,
                          self.options.source_images, self.options.seed)
        self.target_probe, self.source_probe = DecodedProbe(t), (
            DecodedProbe(s) if s is not None else None)
        self.out = Path(out) if out is not None else None
        self.history: list[dict] = []
        self._fixed: dict = {}
        self._calls = 0
        self._views: dict[int, Any] = {}

    @property
    def path(self) -> Path | None:
        return self.out / MONITOR_FILE if self.out is not None else None

    def due(self, epoch: int | None) -> bool:
        """Whether :meth:`step` evaluates at ``epoch`` (every ``options.every``; epoch 0, the
        state before training, always)."""
        n = self._calls if epoch is None else epoch
        return n == 0 or n % self.options.every == 0

    def step(self, model, epoch: int | None = None, step: int | None = None,
             force: bool = False) -> dict | None:
        """Evaluate ``model`` if due (see :meth:`due`); returns the record written, else None.

        ``epoch``: epochs completed (0 before training); ``step``: optimiser steps so far.
        """
        due = force or self.due(epoch)
        self._calls += 1
        if not due or _rank() != 0:
            return None
        record = self.evaluate(model)
        record = {"epoch": epoch, "step": step, **record}
        self.history.append(record)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=True) + "\n")
        return record

    def evaluate(self, model) -> dict:
        """Every metric of ``model`` now (no file written): ``{"metrics": {key: value},
        "intervals": {key: Interval dict}, "skipped": {metric: why}, "seconds": s}``."""
        t0 = time.perf_counter()
        tm = self._view(_unwrap(model))
        try:
            device = next(tm.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        if next(self.pretrained.parameters()).device != device:
            self.pretrained.to(device)
        state = ProbeState(tm, self.pretrained, self.target_probe, self.source_probe,
                           self.options.image_size, self.options.batch_size, device,
                           self.options.composites, self.options.seed, fixed=self._fixed)
        values, intervals, skipped = {}, {}, {}
        with torch.no_grad():
            for name in self.options.metrics:
                res = MONITOR_METRICS[name].compute(state)
                if res.skipped:
                    skipped[name] = res.skipped
                values.update({f"{name}/{k}": v for k, v in res.values.items()})
                intervals.update({f"{name}/{k}": iv.to_dict() for k, iv in
                                  res.intervals.items()})
        state.memo.clear()
        return {"metrics": values, "intervals": intervals, "skipped": skipped,
                "seconds": round(time.perf_counter() - t0, 4)}

    def _view(self, model):
        """The TransferModel view of ``model`` (built once per model object)."""
        key = id(model)
        if key not in self._views:
            self._views = {key: (model, as_transfer_model(model))}  # one model at a time
        return self._views[key][1]

    def scalars(self, record: dict | None = None, prefix: str = "transferscope/") -> dict:
        """The finite metrics of ``record`` (default: the last) as ``{prefix + key: float}``,
        for a logger."""
        record = record or (self.history[-1] if self.history else {"metrics": {}})
        return {prefix + k: float(v) for k, v in record["metrics"].items()
                if v is not None and math.isfinite(v)}

    def summary(self) -> dict:
        """Thresholds crossed (first epoch each rule held) and the first and last values."""
        return {"thresholds": crossings(self.history, self.options.thresholds),
                "evaluations": len(self.history),
                "first": self.history[0]["metrics"] if self.history else {},
                "last": self.history[-1]["metrics"] if self.history else {},
                "options": self.options.model_dump(mode="json")}

    def close(self) -> dict:
        """Write ``monitor_summary.json`` (rank 0) and return :meth:`summary`."""
        out = self.summary()
        if self.out is not None and _rank() == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / SUMMARY_FILE).write_text(json.dumps(out, indent=2, allow_nan=True))
        return out

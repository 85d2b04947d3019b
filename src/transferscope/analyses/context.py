"""The inputs of the source-domain audit, shared by every analysis through one cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferscope.data.image_set import ImageSet
from transferscope.engine.cache import ResultCache
from transferscope.engine.inference import (Predictions, auto_batch_size, check_precision,
                                            default_cache, predict)
from transferscope.engine.settings import InferenceSettings
from transferscope.errors import ConfigError, ModelError
from transferscope.models.base import TransferModel, compose
from transferscope.roles import Role, role as _role

__all__ = ["AuditContext", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """What the audit knows about one target model.

    Attributes:
        name: its key in :attr:`AuditContext.targets`.
        role: one of :mod:`transferscope.roles`: ``"P-T"`` (trained from the source's
            pre-trained weights; shown as fine-tuned), ``"RI-T"`` (from a random init; from
            scratch) or ``"other"`` (unknown, e.g. a loaded checkpoint); older names
            ("fine-tuned", "scratch") are read as these.
        arch: its architecture name.
        init: the init it was trained from (``"imagenet"``, ``"random"``, a path) if known.
        seed: its training seed if known.
        run_dir: its training run directory (holding ``init.safetensors``) if known.
    """

    name: str
    role: Role
    arch: str
    init: str | None = None
    seed: int | None = None
    run_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", _role(self.role))


@dataclass
class AuditContext:
    """Models and data of an audit (paper 000/001 notation).

    Attributes:
        source: M^s, the pretrained model with its source head.
        targets: models trained on the target data, e.g. ``{"fine-tuned": M^t,
            "from scratch": M^b}``; the first whose architecture matches ``source`` is M^t.
        target_data: D^t (usually its validation split).
        source_data: labelled source images (labels = source-head indices), by name.
        image_size: input size for every forward pass.
        extra_sources: source models of other architectures, keyed by ``arch``, so that
            target models of those architectures get an M^st too (cross-architecture rows).
        entries: role, architecture, init, seed and run directory of each target model;
            missing ones are filled in with role ``"other"``.
    """

    source: TransferModel
    targets: dict[str, TransferModel]
    target_data: ImageSet
    source_data: dict[str, ImageSet]
    image_size: int = 224
    batch_size: int | None = None  # None: engine.inference.auto_batch_size(image_size)
    cache: ResultCache = field(default_factory=default_cache)
    progress: bool | None = None
    extra_sources: dict[str, TransferModel] = field(default_factory=dict)
    precision: str = "fp32"
    device: str = "auto"  # where forward passes and Grad-CAM run (engine.resolve_device)
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    target_train_data: ImageSet | None = None  # D^t's training split: v(c) of the detector

    def __post_init__(self) -> None:
        from transferscope.engine.device import check_amp, resolve_device

        unknown = [k for k in self.entries if k not in self.targets]
        if unknown:
            raise ConfigError(f"model entries {unknown} name no target model; targets are "
                              f"{', '.join(self.targets)}")
        self.entries = {k: self.entries.get(k) or ModelEntry(k, "other", m.arch)
                        for k, m in self.targets.items()}
        dev = resolve_device(self.device)  # a missing GPU fails here, before any analysis
        if self.batch_size is None:
            self.batch_size = auto_batch_size(self.image_size, dev)
        check_precision(self.precision)
        check_amp(self.precision, dev)
        n = self.target_data.num_classes
        for name, model in self.targets.items():
            if model.num_classes != n:
                raise ModelError(
                    f"target model {name!r} has {model.num_classes} outputs but the target data "
                    f"{self.target_data.root} has {n} classes ({', '.join(self.target_data.classes)})"
                    "; pass the model trained on this data")
        for name, data in self.source_data.items():
            if data.label_space != "imagenet" or data.num_classes != self.source.num_classes:
                raise ConfigError(f"source images {name!r} ({data.root}) are not labelled with "
                                  f"the {self.source.num_classes} source classes; load them with "
                                  "transferscope.data.source_images")

    @property
    def settings(self) -> InferenceSettings:
        """How this audit's forward passes run, as one object (device, precision, batch size,
        cache, progress)."""
        return InferenceSettings(device=self.device, precision=self.precision,
                                 batch_size=self.batch_size, cache=self.cache,
                                 progress=self.progress)

    def predict(self, model: TransferModel, data, desc: str | None = None) -> Predictions:
        """Cached forward pass at the audit's image size."""
        return predict(model, data, image_size=model.input_size(self.image_size),
                       settings=self.settings, desc=desc)

    def predict_many(self, models, data) -> list[Predictions]:
        """:meth:`predict` for several models, decoding ``data`` once for all of them
        (:func:`~transferscope.engine.inference.predict_many`)."""
        from transferscope.engine.inference import predict_many

        return predict_many(list(models), data, image_size=self.image_size,
                            settings=self.settings)

    def prefetch_source_logits(self) -> None:
        """The source images' logits that recall, bias and agreement read (every source model
        and every target backbone), each set decoded once for all of them."""
        models = [*self.sources.values(), *self.targets.values()]
        for name, data in self.source_data.items():
            self.predict_many(models, data)

    @property
    def sources(self) -> dict[str, TransferModel]:
        """Source model per architecture (the main one first)."""
        return {self.source.arch: self.source, **{k: v for k, v in self.extra_sources.items()
                                                   if k != self.source.arch}}

    def source_for(self, name: str) -> TransferModel:
        """M^s of target model ``name`` (same architecture)."""
        return self.sources[self.targets[name].arch]

    def transferred(self) -> dict[str, TransferModel]:
        """Target models with a source model of their architecture (M^st can be built)."""
        return {k: m for k, m in self.targets.items()
                if m.arch in self.sources and m.num_features == self.sources[m.arch].num_features}

    def m_st(self, name: str) -> TransferModel:
        """Paper 001's M^st: backbone of target model ``name`` + head of its M^s."""
        return compose(self.targets[name], self.source_for(name))

    def with_role(self, role: Role, same_arch: bool = True) -> list[str]:
        """Target models of ``role`` (by default only those of the source's architecture)."""
        role = _role(role)
        return [k for k, e in self.entries.items() if e.role == role
                and (not same_arch or self.targets[k].arch == self.source.arch)]

    def memoize(self, key: str, compute):
        """``compute()`` once per context (inputs shared by several analyses)."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    @property
    def target_classes(self) -> list[str]:
        return self.target_data.classes

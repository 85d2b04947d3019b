"""The remedy base class: JSON settings, source images restricted to the training half."""

from __future__ import annotations

import os
from typing import ClassVar

from transferscope.engine.training import TrainConfig, TrainingHook, TrainResult, train
from transferscope.errors import ConfigError
from transferscope.models.base import TransferModel
from transferscope.remedies._shared import (BackgroundBank, load_backgrounds, source_model,
                                            source_only_classes, split_source_classes)

__all__ = ["fine_tune", "Remedy"]


class Remedy(TrainingHook):
    """A fine-tuning variant. Source images come from ``source`` (an ImageNet-labelled set),
    only from the ``train`` half of :func:`split_source_classes` unless ``source_split="all"``,
    so that evaluation composites can use the other half."""

    name: ClassVar[str] = "remedy"

    def __init__(self, *, source: str = "imagenet-samples", source_split: str = "train-half",
                 split_seed: int = 0, source_init: str = "imagenet", data_root=None, **params):
        if source_split not in ("train-half", "all"):
            raise ConfigError(f"source_split must be 'train-half' or 'all', got {source_split!r}")
        self.data_root = data_root
        self.settings = {"kind": self.name, "source": source, "source_split": source_split,
                         "split_seed": split_seed, "source_init": source_init, **params}
        self._m_s: TransferModel | None = None
        self.report: dict = {}

    def __getattr__(self, key):
        try:
            return self.__dict__["settings"][key]
        except KeyError:
            raise AttributeError(key) from None

    def allowed_classes(self, num_classes: int = 1000) -> list[int]:
        if self.source_split == "all":
            return list(range(num_classes))
        return split_source_classes(num_classes, self.split_seed)[0]

    def source_model(self, arch: str) -> TransferModel:
        if self._m_s is None or self._m_s.arch != arch:
            self._m_s = source_model(arch, self.source_init)
        return self._m_s

    def source_only(self, model: TransferModel, train_set, image_size: int) -> list[int]:
        """F for the target training images (eq. 2, k = 5, v_lo = 0)."""
        return source_only_classes(self.source_model(model.arch), train_set, image_size)

    def background_bank(self, model: TransferModel, train_set, image_size: int) -> BackgroundBank:
        """Source images of source-only classes (training half) at the training size."""
        only = set(self.source_only(model, train_set, image_size))
        classes = [c for c in self.allowed_classes() if c in only]
        self.report["background_classes"] = len(classes)
        return BackgroundBank(*load_backgrounds(self.source, classes, model.norm, image_size,
                                                self.data_root))


def fine_tune(config: TrainConfig, out: str | os.PathLike, remedy: Remedy | None,
              **kwargs) -> TrainResult:
    """:func:`~transferscope.engine.train` with ``remedy`` (None: standard fine-tuning); the
    remedy's settings are part of the run's config, so a resume with others is refused."""
    if remedy is None:
        return train(config, out, **kwargs)
    config = config.model_copy(update={"remedy": remedy.settings})
    return train(config, out, hook=remedy, **kwargs)

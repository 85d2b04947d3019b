"""How forward passes run, as one frozen object: device, precision, batch size, decoding
workers, memory format, cache and progress. Passed whole from the audit context to
:func:`~transferscope.engine.predict` and on to the pass itself, instead of seven arguments."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from transferscope.engine.cache import ResultCache
from transferscope.engine.device import check_amp, resolve_device
from transferscope.errors import ConfigError

__all__ = ["InferenceSettings"]


@dataclass(frozen=True)
class InferenceSettings:
    """Settings of a forward pass (none of them changes a result but ``precision``).

    Attributes:
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:N]"``, ``"mps"`` or a
            ``torch.device``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast (part of cache keys).
        batch_size: None: :func:`~transferscope.engine.inference.auto_batch_size` for the
            image size and device.
        num_workers: decoding processes; None sizes them to the machine.
        channels_last: NHWC inputs and weights (faster convolutions on CPU).
        cache: a :class:`ResultCache`; None: the shared default one.
        progress: show progress bars (None: when the output is a terminal).

    Example:
        >>> s = InferenceSettings(batch_size=8)
        >>> s.with_(precision="bf16").precision, s.precision
        ('bf16', 'fp32')
        >>> InferenceSettings(precision="fp8")
        Traceback (most recent call last):
        ...
        transferscope.errors.ConfigError: precision must be one of fp32, bf16, fp16; got 'fp8'
    """

    device: str | torch.device | None = "auto"
    precision: str = "fp32"
    batch_size: int | None = None
    num_workers: int | None = None
    channels_last: bool = True
    cache: ResultCache | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be one of fp32, bf16, fp16; got "
                              f"{self.precision!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")

    def with_(self, **changes) -> "InferenceSettings":
        """A copy with ``changes`` (None values are ignored: "not given")."""
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown inference settings {sorted(unknown)}")
        return replace(self, **given) if given else self

    def resolved(self, image_size: int | None, default_size: int = 224) -> "InferenceSettings":
        """With the device resolved (and checked for the precision), the cache and the batch
        size filled in for ``image_size``."""
        from transferscope.engine.inference import auto_batch_size, default_cache

        dev = resolve_device(self.device)
        check_amp(self.precision, dev)
        return replace(self, device=dev, cache=self.cache if self.cache is not None
                       else default_cache(), batch_size=self.batch_size or auto_batch_size(
                           image_size or default_size, dev))

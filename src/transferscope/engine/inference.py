"""Batched inference with cached logits and layer activations.

Every analysis asks :func:`predict` for what it needs; identical requests (same weights,
same data manifest, same preprocessing, same layers) are served from the
:class:`~transferscope.engine.cache.ResultCache`, so each (model, data) pair runs once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from transferscope._progress import progress_bar
from transferscope.data.image_set import ImageSet
from transferscope.data.transforms import describe_transform, eval_transform
from transferscope.engine import distributed
from transferscope.engine.cache import ResultCache
from transferscope.engine.device import (PRECISIONS, amp_dtype, check_amp,  # noqa: F401
                                         resolve_device, to_device)
from transferscope.engine.modes import eval_mode
from transferscope.engine._memory import every, trim_heap
from transferscope.engine.partial_pass import PartialPass
from transferscope.engine.settings import InferenceSettings
from transferscope.engine.loading import make_loader
from transferscope.errors import ConfigError
from transferscope.models.base import TransferModel

__all__ = ["auto_batch_size", "capture", "check_precision", "default_cache", "default_transform",
           "FAST_DECODE_ENV", "forward_batch", "predict", "predict_many", "Predictions"]

_default_cache: ResultCache | None = None
FAST_DECODE_ENV = "TRANSFERSCOPE_FAST_DECODE"


def default_cache() -> ResultCache:
    global _default_cache
    if _default_cache is None:
        _default_cache = ResultCache()
    return _default_cache


@dataclass
class Predictions:
    """Outputs of a model over a data set, in the data set's sample order.

    Attributes:
        logits: ``(N, C)`` float32.
        labels: ``(N,)`` int64 ground-truth labels of the data set.
        activations: layer name -> ``(N, ...)`` outputs (spatially averaged if pooled).
        from_cache: whether the result came from the cache.
    """

    logits: torch.Tensor
    labels: torch.Tensor
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(dim=1)

    @property
    def preds(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    def accuracy(self, k: int = 1) -> float:
        """Top-k accuracy in [0, 1]."""
        topk = self.logits.topk(k, dim=1).indices
        return (topk == self.labels[:, None]).any(dim=1).float().mean().item()


@contextlib.contextmanager
def capture(model: nn.Module, modules: dict[str, nn.Module], pool: str = "none"):
    """Record the outputs of ``modules`` during forward passes; hooks are removed on exit.

    Yields a dict name -> list of per-batch tensors (detached, on CPU).
    """
    store: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def make_hook(name):
        def hook(_mod, _inp, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            if pool == "avg" and out.dim() == 3:  # tokens (N, T, D): mean over tokens
                out = out.mean(1)
            elif pool == "avg" and out.dim() > 2:  # maps (N, C, H, W): mean over space
                out = out.flatten(2).mean(-1)
            store[name].append(out.detach().float().cpu().contiguous())
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line ConfigError."""
    amp_dtype(precision)
    return precision


def auto_batch_size(image_size: int, device: str | torch.device = "cpu") -> int:
    """Inference batch size when none is given: on CPU about 16 images of 128 px (~260 k
    pixels: activations stay in cache; efficientnet_lite0 runs 1.3x faster at 128 px and 3x
    at 224 px than with batch 32, resnet18 as fast, see benchmarks/RESULTS.md), else 32."""
    if torch.device(device).type != "cpu":
        return 32
    return int(min(64, max(4, round(16 * (128 / max(1, image_size)) ** 2))))


def forward_batch(model: nn.Module, x: torch.Tensor, channels_last: bool = True,
                  precision: str = "fp32") -> torch.Tensor:
    """Logits ``(N, C)`` of one batch ``x (N, 3, H, W)`` as :func:`predict` computes them.

    ``inference_mode``; with ``channels_last`` the input is made NHWC (the model's weights
    should be too: ``model.to(memory_format=torch.channels_last)``, as :func:`predict` does),
    which lets oneDNN's convolutions skip layout conversions (faster on CPU). ``precision``
    ``"bf16"`` runs under bfloat16 autocast (faster where the CPU has AVX512-BF16/AMX or on
    GPUs; logits differ from fp32 by ~1e-2); outputs are float32 either way.
    """
    dtype = amp_dtype(precision)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype or torch.bfloat16,
                                                enabled=dtype is not None):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return model(x).float()


def predict(model: TransferModel, data: ImageSet, *, image_size: int | None = None,
            transform: Callable | None = None, layers: Sequence[str] = (), pool: str = "none",
            settings: InferenceSettings | None = None, desc: str | None = None,
            fast_decode: bool | None = None, with_features: bool = False,
            **overrides) -> Predictions:
    """Run ``model`` over ``data`` and return logits (and activations of ``layers``).

    Args:
        model: any :class:`TransferModel`; put in eval mode for the call.
        data: an :class:`ImageSet`; its own transform is ignored in favour of ``transform``
            (default: the model's evaluation preprocessing at ``image_size``).
        layers: layer-group names (see ``model.layer_groups()``) or module paths.
        pool: ``"none"`` keeps full activations, ``"avg"`` averages over space.
        settings: how the pass runs (:class:`~transferscope.engine.settings.InferenceSettings`:
            device, precision, batch size, workers, channels_last, cache, progress); any of
            its fields may also be given as a keyword (``batch_size=8``,
            ``cache=ResultCache(enabled=False)`` to force recomputation, ``precision="bf16"``
            - part of the cache key - ``device="cuda"``), overriding ``settings``.
        fast_decode: with the default transform, decode large JPEGs at reduced scale (JPEG
            draft mode, never below the resize target; own cache keys). Default:
            ``TRANSFERSCOPE_FAST_DECODE=1`` turns it on, else off.
        with_features: also return the penultimate features ``(N, D)`` (the cached entry
            the logits come from) as ``activations["features"]``; no ``layers``.

    Returns:
        :class:`Predictions` with ``logits`` ``(N, C)`` and ``labels`` ``(N,)``.
    """
    if pool not in ("none", "avg"):
        raise ConfigError(f"pool must be 'none' or 'avg', got {pool!r}")
    if len(data) == 0:
        raise ConfigError(f"data set at {data.root} is empty; nothing to predict")
    distributed.setup()
    run = (settings or InferenceSettings()).with_(**overrides).resolved(
        image_size, model.default_size)
    cache = run.cache
    transform = transform or default_transform(model, data, image_size, fast_decode)
    extra = {} if run.precision == "fp32" else {"precision": run.precision}  # fp32 keys as before
    if not layers and isinstance(model, TransferModel):
        # logits only: cache the penultimate features under the backbone's hash, so models
        # that differ only in their head (M^t and M^st) share one backbone pass
        key = cache.key(kind="features", weights=model.backbone_hash(), data=data.digest,
                        transform=describe_transform(transform), **extra)
        tensors, hit = _cached_forward(key, _Features(model), data, transform, {}, pool, run,
                                       desc or f"predict {model.arch} on {data.root.name}")
        out = Predictions(_head(model, tensors["features"], run.batch_size), tensors["labels"],
                          from_cache=hit)
        if with_features:
            out.activations["features"] = tensors["features"]
        return out
    if with_features:
        raise ConfigError("with_features needs a TransferModel and no layers")
    key = cache.key(kind="predict", weights=model.weights_hash(), data=data.digest,
                    transform=describe_transform(transform), layers=list(layers), pool=pool,
                    **extra)
    tensors, hit = _cached_forward(key, model, data, transform, model.resolve_layers(layers),
                                   pool, run, desc or f"predict {model.arch} on "
                                   f"{data.root.name}")
    return Predictions(tensors["logits"], tensors["labels"],
                       {k[4:]: v for k, v in tensors.items() if k.startswith("act.")},
                       from_cache=hit)


def default_transform(model: TransferModel, data: ImageSet, image_size: int | None = None,
                      fast_decode: bool | None = None):
    """The preprocessing :func:`predict` applies when given no transform: the data's own
    model transform (boxes, views) if it has one, else the model's evaluation transform at
    ``image_size`` (JPEG draft decoding when ``fast_decode``, default
    ``$TRANSFERSCOPE_FAST_DECODE``)."""
    if hasattr(data, "model_transform"):
        return data.model_transform(model.norm, model.fixed_size)  # keeps box geometry
    if fast_decode is None:
        fast_decode = os.environ.get(FAST_DECODE_ENV, "") in ("1", "true", "yes")
    return eval_transform(model.norm, image_size or model.default_size, draft=fast_decode)


def predict_many(models: Sequence[TransferModel], data: ImageSet, *,
                 image_size: int | None = None, settings: InferenceSettings | None = None,
                 desc: str | None = None, **overrides) -> list[Predictions]:
    """:func:`predict` (logits) of several models over ``data``, decoding each image once
    for all models that preprocess it alike (same transform): the backbones whose features
    are not cached yet share one data pipeline, batch by batch. Same results and cache entries
    as calling :func:`predict` per model (``image_size``: each model's
    ``input_size(image_size)``).

    Example:
        >>> preds = predict_many([source, m_st], images, image_size=128)  # doctest: +SKIP
    """
    given = (settings or InferenceSettings()).with_(**overrides)
    run = given.resolved(image_size)
    cache = run.cache
    extra = {} if run.precision == "fp32" else {"precision": run.precision}
    groups: dict[str, tuple[object, dict[str, TransferModel]]] = {}
    for model in models:
        if not isinstance(model, TransferModel):
            continue
        tf = default_transform(model, data, model.input_size(image_size) if image_size
                               else None)
        key = cache.key(kind="features", weights=model.backbone_hash(), data=data.digest,
                        transform=describe_transform(tf), **extra)
        if not cache.enabled or cache.path(key).is_file():
            continue
        groups.setdefault(describe_transform(tf), (tf, {}))[1].setdefault(key, model)
    if len(data) and distributed.setup().size == 1:
        for tf, todo in groups.values():
            if len(todo) > 1:  # one decoding pass for these backbones
                _forward_together(todo, data, tf, given.resolved(
                    image_size, next(iter(todo.values())).default_size), desc)
    return [predict(m, data, image_size=m.input_size(image_size) if image_size else None,
                    settings=given.with_(cache=cache, device=run.device)) for m in models]


def _forward_together(todo: dict[str, TransferModel], data: ImageSet, transform,
                      run: InferenceSettings, desc: str | None) -> None:
    """Features of every backbone in ``todo`` (cache key -> model) from one pass over the
    decoded batches; each stored under its key, as :func:`predict` would."""
    cache, batch_size, device = run.cache, run.batch_size, run.device
    channels_last, precision = run.channels_last, run.precision
    with contextlib.ExitStack() as locks:
        for key in todo:
            locks.enter_context(cache.writing(key))
        todo = {k: m for k, m in todo.items() if not cache.path(k).is_file()}  # done meanwhile
        if not todo:
            return
        nets = {k: _Features(m) for k, m in todo.items()}
        modes = [(sub, sub.training) for m in todo.values() for sub in m.modules()]
        outputs: dict[str, list[torch.Tensor]] = {k: [] for k in todo}
        labels = []
        partial = PartialPass(cache, list(todo), len(data), batch_size)
        earlier = partial.resume()  # an interrupted pass: only the rest is decoded
        part = data.with_transform(transform)
        if partial.done:
            part = torch.utils.data.Subset(part, range(partial.done, len(data)))
        loader = make_loader(part, batch_size, num_workers=run.num_workers, device=device)
        try:
            for net in nets.values():
                net.eval()
                if device.type != "cpu":
                    net.to(device)
                if channels_last:
                    net.to(memory_format=torch.channels_last)
            names = ", ".join(sorted({m.arch for m in todo.values()}))
            with progress_bar(len(data), desc or f"predict {len(todo)} models ({names}) on "
                              f"{data.root.name}", run.progress) as advance:
                advance(partial.done)
                for x, y in loader:
                    x = to_device(x, device)
                    if channels_last:  # once for all nets (forward_batch would copy per net)
                        x = x.contiguous(memory_format=torch.channels_last)
                    for k, net in nets.items():
                        outputs[k].append(forward_batch(net, x, channels_last, precision))
                    labels.append(y)
                    partial.add({"labels": y, **{f"features.{k}": outputs[k][-1]
                                                 for k in todo}})
                    advance(len(y))
                    if every(len(labels)):
                        trim_heap()  # RSS stays flat over long passes (engine/_memory.py)
        except BaseException:
            partial.save()  # what was computed is kept for the next pass
            raise
        finally:
            for sub, was in modes:  # each sub-module's own mode back
                sub.training = was
            for m in todo.values():
                if device.type != "cpu":
                    m.to("cpu")
        y = torch.cat(earlier.get("labels", []) + labels)
        for k, m in todo.items():
            features = earlier.get(f"features.{k}", []) + [t.cpu() if earlier else t
                                                           for t in outputs[k]]
            cache.put(k, {"features": torch.cat(features), "labels": y}, arch=m.arch,
                      data=str(data.root))
        partial.finish()


class _Features(nn.Module):
    """``model.forward_features`` as a module (what the features cache entry holds)."""

    def __init__(self, model: TransferModel):
        super().__init__()
        self.model = model
        self.arch = model.arch
        self.train(model.training)  # a new module is training: restoring that mode would
        #                             leave ``model`` in train mode after predict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _head(model: TransferModel, features: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits ``(N, C)`` from cached features, batch by batch as the full forward runs it."""
    with eval_mode(model), torch.inference_mode():  # predict() refuses empty data: a batch
        return torch.cat([model.forward_head(f).float() for f in features.split(batch_size)])


def _cached_forward(key: str, model: nn.Module, data: ImageSet, transform, modules, pool,
                    run: InferenceSettings, desc: str | None
                    ) -> tuple[dict[str, torch.Tensor], bool]:
    """:func:`_compute_or_load` holding the cache entry's writer lock when it is missing (one
    process computes it; another one asking for it meanwhile waits, then reads it)."""
    args, cache = (key, model, data, transform, modules, pool, run, desc), run.cache
    if not cache.enabled or cache.path(key).is_file() or distributed.setup().size > 1:
        return _compute_or_load(*args)
    with cache.writing(key):
        return _compute_or_load(*args)


def _compute_or_load(key: str, model: nn.Module, data: ImageSet, transform, modules, pool,
                     run: InferenceSettings, desc: str | None
                     ) -> tuple[dict[str, torch.Tensor], bool]:
    """Tensors ``{"logits" or "features", "labels", "act.<layer>"...}`` of ``model`` over
    ``data`` from the cache, or computed (sharded under torchrun) and stored; + hit flag."""
    out_name = "features" if isinstance(model, _Features) else "logits"
    cache, batch_size, channels_last = run.cache, run.batch_size, run.channels_last
    world = distributed.setup()  # under torchrun: this rank runs its shard of the batches
    hit = cache.get(key)
    if distributed.everywhere(hit is not None):
        return hit, True

    part = data.with_transform(transform)
    partial = PartialPass(cache, [key], len(data), batch_size)  # unused under torchrun
    earlier = partial.resume() if world.size == 1 else {}  # an interrupted pass: the rest
    if world.size > 1:
        part = torch.utils.data.Subset(part, distributed.shard(len(data), batch_size))
    elif partial.done:
        part = torch.utils.data.Subset(part, range(partial.done, len(data)))
    device = world.device if run.device is None else run.device
    loader = make_loader(part, batch_size, num_workers=run.num_workers, device=device)
    modes = [(sub, sub.training) for sub in model.modules()]
    model.eval()
    if device.type != "cpu":
        model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    outputs, labels = [], []
    try:
        with capture(model, modules, pool) as store, \
                progress_bar(len(part) + partial.done, desc, run.progress) as advance:
            advance(partial.done)
            for x, y in loader:
                outputs.append(forward_batch(model, to_device(x, device), channels_last,
                                             run.precision))
                labels.append(y)
                if world.size == 1:
                    partial.add({out_name: outputs[-1], "labels": y,
                                 **{f"act.{n}": v[-1] for n, v in store.items()}})
                advance(len(y))
                if every(len(labels)):
                    trim_heap()  # RSS stays flat over long passes (engine/_memory.py)
    except BaseException:
        if world.size == 1:
            partial.save()  # what was computed is kept for the next pass
        raise
    finally:
        for sub, was in modes:  # each sub-module's own mode back
            sub.training = was
        if device.type != "cpu":
            model.to("cpu")
    parts = {out_name: outputs, "labels": labels, **{f"act.{n}": v for n, v in store.items()}}
    if earlier:
        parts = {k: earlier.get(k, []) + [t.cpu() for t in v] for k, v in parts.items()}
    tensors = distributed.gather_shards(parts, len(data), batch_size)  # data order
    if distributed.writes_cache():
        cache.put(key, tensors, arch=model.arch, data=str(data.root))
    if world.size == 1:
        partial.finish()
    distributed.barrier()  # the entry is on disk before any rank asks for it again
    return tensors, False

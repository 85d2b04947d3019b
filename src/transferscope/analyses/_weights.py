"""Weight-space helpers shared by the analyses that work on state dicts (barriers, basins,
criticality, transferability, distances, layer gradients): states, parameter groups, shape
checks, seeding, and the evaluation of weight settings - :func:`combine` / :func:`interpolate`
(paper 003, section 3.3: theta_lambda = (1 - lambda) theta_0 + lambda theta_1, BatchNorm
variances combined geometrically outside the simplex) and :func:`evaluate_states` /
:func:`evaluate_path` / :func:`evaluate_path_batched` (with BatchNorm re-estimated or folded).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from transferscope.engine.batchnorm import BatchNormFolder
from transferscope.engine.batchnorm import bn_layers as _bn_layers
from transferscope.engine.batchnorm import bn_train_mode as _bn_train
from transferscope.engine.batchnorm import reestimate_bn
from transferscope.engine.batchnorm import split_batch as _split
from transferscope.engine.modes import eval_mode
from transferscope.errors import ConfigError, ModelError
from transferscope.models.base import TransferModel

__all__ = ["bn_loader", "check_state_dicts", "combine", "evaluate", "evaluate_path",
           "evaluate_path_batched", "evaluate_states", "interpolate", "parameter_groups",
           "ParamGroup", "seed_of", "State", "state_of", "StateDict"]

StateDict = Mapping[str, torch.Tensor]
State = StateDict | Callable[[], StateDict]
#: one group as used here: (layer name, parameter names, is_classifier)
ParamGroup = tuple[str, Sequence[str], bool]


def state_of(obj) -> StateDict:
    """The state dict of a module, or ``obj`` itself when it already is one."""
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def seed_of(*parts: int) -> int:
    """One 32-bit seed from several integers (order matters, signs do not).

    >>> seed_of(1, 2) == seed_of(1, 2) != seed_of(2, 1)
    True
    """
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


def parameter_groups(model: TransferModel, include_classifier: bool = True) -> list[ParamGroup]:
    """``(name, parameter names, is_classifier)`` of every layer group of ``model``, in order.

    Example:
        >>> from transferscope.models import create_model
        >>> parameter_groups(create_model("baseline_cnn", 2, image_size=32))[0]
        ('conv1', ['backbone.conv1.weight', 'backbone.conv1.bias'], False)
    """
    return [(g.name, g.parameter_names(model), g.is_classifier)
            for g in model.layer_groups(include_classifier)]


def check_state_dicts(dicts: Mapping[str, StateDict], names: Sequence[str],
                      layer: str | None = None) -> None:
    """Raise :class:`ModelError` unless every dict has every name with one common shape.

    ``dicts`` maps a label (``"theta_A"``) to a state dict; the first dict is the reference
    for shapes. The message names the parameter, its layer and the dict at fault.
    """
    where = f" (layer {layer!r})" if layer else ""
    ref_label, ref = next(iter(dicts.items()))
    for name in names:
        for label, sd in dicts.items():
            if name not in sd:
                raise ModelError(f"parameter {name!r}{where} is missing from {label}; all state "
                                 "dicts must come from the same architecture and head size")
        shape = tuple(ref[name].shape)
        for label, sd in dicts.items():
            if tuple(sd[name].shape) != shape:
                raise ModelError(f"parameter {name!r}{where} has shape {tuple(sd[name].shape)} in "
                                 f"{label} but {shape} in {ref_label}; give state dicts of the "
                                 "same architecture and number of classes")


_state = state_of



def combine(states: Sequence[StateDict], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_i w_i * theta_i`` for floating tensors; integer/bool tensors from the argmax weight.

    Weights need not be convex (extrapolation uses negative ones); BatchNorm ``running_var``
    tensors are then combined as ``exp(sum_i w_i log var_i)``, which stays positive where the
    linear combination can turn negative. A one-hot weight vector returns exact copies of
    that state. Sums are taken in float64 and cast back.

    Raises:
        ModelError: the states differ in keys or shapes (naming the tensor).

    Example:
        >>> a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 2.0])}
        >>> combine([a, b], [0.75, 0.25])["w"].tolist()
        [1.0, 2.0]
        >>> v = [{"bn.running_var": torch.tensor([0.5])}, {"bn.running_var": torch.tensor([2.0])}]
        >>> combine(v, [2.0, -1.0])["bn.running_var"].tolist()  # linear: -1.0
        [0.125]
    """
    states = [_state(s) for s in states]
    w = [float(x) for x in weights]
    if not states or len(states) != len(w):
        raise ConfigError(f"combine needs one weight per state, got {len(states)} states and "
                          f"{len(w)} weights")
    ref = states[0]
    for i, s in enumerate(states[1:], 1):
        if set(s) != set(ref):
            raise ModelError(f"state {i} and state 0 differ in tensors (e.g. "
                             f"{sorted(set(s) ^ set(ref))[0]!r}); combine states of the same "
                             "architecture and head size")
    top = int(np.argmax(w))
    one_hot = w[top] == 1.0 and all(x == 0.0 for i, x in enumerate(w) if i != top)
    convex = all(x >= 0.0 for x in w)
    out = {}
    for key, t0 in ref.items():
        for i, s in enumerate(states):
            if s[key].shape != t0.shape:
                raise ModelError(f"tensor {key!r} has shape {tuple(s[key].shape)} in state {i} "
                                 f"but {tuple(t0.shape)} in state 0; combine states of the same "
                                 "architecture and number of classes")
        if one_hot or not t0.is_floating_point():
            out[key] = states[top][key].detach().clone()
            continue
        geometric = not convex and key.rpartition(".")[2] == "running_var"
        acc = torch.zeros(t0.shape, dtype=torch.float64, device=t0.device)
        for wi, s in zip(w, states):
            if wi != 0.0:
                t = s[key].detach().to(t0.device, torch.float64)
                acc += wi * (t.clamp(min=1e-12).log() if geometric else t)
        out[key] = (acc.exp() if geometric else acc).to(t0.dtype)
    return out


def interpolate(theta0: StateDict, theta1: StateDict, lam: float) -> dict[str, torch.Tensor]:
    """theta_lambda = (1 - lambda) theta_0 + lambda theta_1 (any real lambda).

    lambda = 0 and 1 return exact copies of the endpoints; integer buffers come from the
    endpoint nearest lambda (theta_0 on a tie at 0.5).
    """
    return combine([theta0, theta1], [1.0 - float(lam), float(lam)])


# --------------------------------------------------------------------------- evaluation
def _score(logits: torch.Tensor, y: torch.Tensor | None, acc: list, where: str = "",
           sink: list | None = None) -> None:
    if y is None:
        raise ConfigError("the evaluation loader must yield (images, labels) batches")
    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise ModelError(f"{where or 'the model'}: {bad} of {logits.numel()} logits are not "
                         "finite (NaN/inf), so loss and accuracy are undefined; check the "
                         "weights (e.g. BatchNorm statistics of an extrapolated model: keep "
                         "bn_reestimate on)")
    losses = F.cross_entropy(logits.double(), y, reduction="none")
    hits = logits.argmax(dim=1) == y
    acc[0] += float(losses.sum())
    acc[1] += int(hits.sum())
    acc[2] += int(y.numel())
    if sink is not None:  # per-image values, for intervals over evaluation images
        sink.append((losses.cpu().numpy(), hits.cpu().numpy()))


def _frame(accs: list, extra: dict | None = None) -> pd.DataFrame:
    rows = []
    for i, (loss, correct, n) in enumerate(accs):
        if n == 0:
            raise ConfigError("the evaluation loader yielded no labelled samples")
        rows.append({"point": i, "loss": loss / n, "accuracy": correct / n,
                     "error": 1.0 - correct / n, "n": n})
    df = pd.DataFrame(rows)
    for k, v in (extra or {}).items():
        df.insert(0, k, list(v))
    return df


@contextlib.contextmanager
def _evaluating(model: nn.Module, channels_last: bool = False):
    """Eval mode without gradients (channels-last weights if asked); mode and memory format
    are restored afterwards."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        with eval_mode(model), torch.no_grad():
            yield
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)


def _nhwc(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """4-d floating tensors (images, conv weights) to channels-last when asked."""
    if channels_last and t.dim() == 4 and t.is_floating_point():
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _run_loader(model: nn.Module, loader: Iterable, device, channels_last: bool = False,
                state: dict | None = None, where: str = "") -> list:
    acc = [0.0, 0, 0]
    with _evaluating(model, channels_last):
        for batch in loader:
            x, y = _split(batch, device)
            x = _nhwc(x, channels_last)
            out = model(x) if state is None else functional_call(model, state, (x,))
            _score(out.float(), y, acc, where)
    return acc


def bn_loader(model: nn.Module, loader: Iterable, bn_reestimate_loader: Iterable | None,
              bn_reestimate: bool | None) -> Iterable | None:
    """The loader to re-estimate BatchNorm statistics with, or None.

    ``bn_reestimate=None`` (default): re-estimate whenever ``model`` has BatchNorm layers with
    running statistics, on ``bn_reestimate_loader`` or else on ``loader`` (which must then be
    re-iterable, e.g. a list of batches or a DataLoader). ``True``: always; ``False``: never.
    """
    if bn_reestimate is False:
        return None
    if bn_reestimate is None and not _bn_layers(model):
        return None
    return loader if bn_reestimate_loader is None else bn_reestimate_loader


def _folder(model: nn.Module, loader: Iterable, device) -> BatchNormFolder | None:
    """BatchNorm folding for ``model``, checked on two images of the first batch."""
    probe = next(iter(loader), None)
    return None if probe is None else BatchNormFolder.build(model, _split(probe, device)[0][:2])


def _folded(folder: BatchNormFolder, state: dict, channels_last: bool) -> dict:
    return {k: _nhwc(v, channels_last) for k, v in folder.state(state).items()}


def evaluate(model: nn.Module, loader: Iterable, device=None,
             channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy, accuracy and error of ``model`` (eval mode) over ``loader``."""
    return _frame([_run_loader(model, loader, device, channels_last)]
                  ).iloc[0].drop("point").to_dict()


def evaluate_path(model: nn.Module, theta0, theta1, lambdas: Sequence[float], loader: Iterable,
                  bn_reestimate_loader: Iterable | None = None, device=None,
                  channels_last: bool = False, fold_bn: bool = True,
                  bn_reestimate: bool | None = None) -> pd.DataFrame:
    """Loss and accuracy along theta_lambda, one full pass over ``loader`` per lambda.

    Each point is loaded into ``model`` (restored afterwards); with ``bn_reestimate_loader``
    the BatchNorm statistics are re-estimated at each point first (by default on ``loader``
    whenever the model has BatchNorm, see :func:`bn_loader`). ``channels_last`` runs
    NHWC (faster on CPU, float rounding differs from NCHW at ~1e-7); ``fold_bn`` evaluates
    with BatchNorm folded into the convolutions, exactly as :func:`evaluate_states` does.

    Returns:
        Columns ``lambda, point, loss, accuracy, error, n``.
    """
    def snapshot(obj):  # the states may alias the model's own tensors (model.state_dict())
        return {k: v.detach().clone() for k, v in _state(obj).items()}

    saved, t0, t1 = snapshot(model), snapshot(theta0), snapshot(theta1)
    bn_reestimate_loader = bn_loader(model, loader, bn_reestimate_loader, bn_reestimate)
    folder = _folder(model, loader, device) if fold_bn else None
    accs = []
    try:
        for lam in lambdas:
            model.load_state_dict(interpolate(t0, t1, lam))
            if bn_reestimate_loader is not None:
                reestimate_bn(model, bn_reestimate_loader, device, channels_last)
            where = f"lambda = {float(lam):g}"
            if folder is None:
                accs.append(_run_loader(model, loader, device, channels_last, where=where))
            else:
                accs.append(_run_loader(folder.model, loader, device, channels_last,
                                        _folded(folder, model.state_dict(), channels_last),
                                        where))
    finally:
        model.load_state_dict(saved)
    return _frame(accs, {"lambda": [float(x) for x in lambdas]})


def evaluate_states(model: nn.Module, states: Sequence[State], loader: Iterable, *,
                    bn_reestimate_loader: Iterable | None = None, device=None,
                    precompute: bool = True, channels_last: bool = False,
                    fold_bn: bool = True, bn_reestimate: bool | None = None,
                    items: list | None = None) -> pd.DataFrame:
    """Evaluate many weight settings of one architecture, reading each data batch once.

    A ``loader`` that is a list or tuple of batches (already decoded) is run states outer,
    batches inner, which keeps one weight setting in cache at a time (faster on CPU); any
    other iterable is read once, batches outer. The numbers are the same either way.

    Args:
        model: supplies the architecture (already on ``device``); its own weights are not
            used or changed.
        states: full state dicts, or zero-argument callables returning one (which must return
            the same values each call, e.g. seeded noise).
        precompute: build every state once up front (memory: one model per state); False
            rebuilds callables on every batch (slower, constant memory).
        bn_reestimate_loader: re-estimate BatchNorm statistics per state first (one pass
            over this loader, batch outer, state inner).
        bn_reestimate: None (default) re-estimates whenever the model has BatchNorm, on
            ``bn_reestimate_loader`` or else ``loader``; False never (see :func:`bn_loader`).
        channels_last: NHWC images and conv weights (same numbers as :func:`evaluate_path`
            with the same flag; faster on CPU).
        fold_bn: fold each BatchNorm into the convolution before it, per state, after any
            re-estimation (:class:`~transferscope.engine.batchnorm.BatchNormFolder`; faster,
            results equal to ~1e-6; skipped automatically where folding would change them).
        items: a list to append, per state, ``(loss, correct)`` arrays over the evaluation
            images in loader order (for intervals over images).

    Returns:
        Columns ``point, loss, accuracy, error, n`` in the order of ``states``.

    Raises:
        ModelError: a state gives non-finite logits (named, with their count).
    """
    bn_reestimate_loader = bn_loader(model, loader, bn_reestimate_loader, bn_reestimate)

    def build(fn):
        st = dict(_state(fn() if callable(fn) else fn))
        return {k: _nhwc(v.to(device) if device is not None else v, channels_last)
                for k, v in st.items()}

    fns = list(states)
    if precompute:
        fixed = [build(fn) for fn in fns]
    own = set(model.state_dict())

    def point(i, extra=None):
        st = fixed[i] if precompute else build(fns[i])
        if len(st) != len(own) or set(st) != own:
            bad = sorted(own ^ set(st))[0]
            raise ModelError(f"state {i} does not fit the model: {bad!r} is "
                             f"{'missing' if bad in own else 'unexpected'}; give full state "
                             "dicts of the model's architecture")
        return {**st, **(extra or {})} if extra else st

    bufs: list[dict] = [{} for _ in fns]
    if bn_reestimate_loader is not None:
        with _bn_train(model) as bns, torch.no_grad():
            for i in range(len(fns)):
                st = point(i)
                for n in bns:
                    for b, fill in (("running_mean", 0), ("running_var", 1),
                                    ("num_batches_tracked", 0)):
                        key = f"{n}.{b}" if n else b
                        bufs[i][key] = torch.full_like(st[key], fill)
            for batch in bn_reestimate_loader:
                x = _nhwc(_split(batch, device)[0], channels_last)
                for i in range(len(fns)):
                    functional_call(model, point(i, bufs[i]), (x,))
    accs = [[0.0, 0, 0] for _ in fns]
    sinks = [[] if items is not None else None for _ in fns]
    decoded = isinstance(loader, (list, tuple))  # batches already in memory
    folder = _folder(model, loader, device) if fold_bn and fns else None
    net, final = model, (lambda i: point(i, bufs[i]))
    if folder is not None:
        net = folder.model

        def fold(i):
            return _folded(folder, point(i, bufs[i]), channels_last)
        keep = precompute and not decoded  # state-outer order builds one state at a time
        folded = [fold(i) for i in range(len(fns))] if keep else None
        final = (lambda i: folded[i]) if keep else fold
    with _evaluating(net, channels_last):
        if decoded:  # states outer: one weight setting stays in cache across all batches
            xs = [(_nhwc(x, channels_last), y) for x, y in (_split(b, device) for b in loader)]
            for i in range(len(fns)):
                st = final(i)
                for x, y in xs:
                    _score(functional_call(net, st, (x,)).float(), y, accs[i], f"state {i}",
                           sinks[i])
        else:  # batches outer: each batch is decoded once for all states
            for batch in loader:
                x, y = _split(batch, device)
                x = _nhwc(x, channels_last)
                for i in range(len(fns)):
                    _score(functional_call(net, final(i), (x,)).float(), y, accs[i],
                           f"state {i}", sinks[i])
    if items is not None:
        items.extend((np.concatenate([a for a, _ in sk]), np.concatenate([b for _, b in sk]))
                     for sk in sinks)
    return _frame(accs)


def evaluate_path_batched(model: nn.Module, theta0, theta1, lambdas: Sequence[float],
                          loader: Iterable, bn_reestimate_loader: Iterable | None = None,
                          device=None, precompute: bool = True,
                          channels_last: bool = False, fold_bn: bool = True,
                          bn_reestimate: bool | None = None,
                          items: list | None = None) -> pd.DataFrame:
    """:func:`evaluate_path` with data outer, lambda inner (each batch decoded once);
    ``items`` as in :func:`evaluate_states`."""
    t0, t1 = _state(theta0), _state(theta1)
    df = evaluate_states(model, [lambda lam=lam: interpolate(t0, t1, lam) for lam in lambdas],
                         loader, bn_reestimate_loader=bn_reestimate_loader, device=device,
                         precompute=precompute, channels_last=channels_last, fold_bn=fold_bn,
                         bn_reestimate=bn_reestimate, items=items)
    df.insert(0, "lambda", [float(x) for x in lambdas])
    return df

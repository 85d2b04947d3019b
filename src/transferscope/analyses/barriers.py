"""Performance barriers on the line between two solutions (paper 003, section 3.3, Figure 4;
Appendix B.4-B.8, Figures 12-18).

Models on the line theta_lambda = (1 - lambda) theta_0 + lambda theta_1 between two weight
vectors are evaluated for lambda in [0, 1], or beyond (e.g. [-1, 2], Appendix B.6, Figure 18).
Two solutions in one flat basin show no barrier: the loss along the line stays at or below
the straight line between the endpoint losses. The *barrier height* is the largest excess of
the loss over that straight line on [0, 1] (for accuracy, the largest drop below it).

Floating tensors are combined linearly; integer buffers (``num_batches_tracked``) come from
the endpoint with the largest weight. BatchNorm statistics of a combined network can be
re-estimated at every point (reset, then a cumulative average over one pass of a
re-estimation loader with only the BatchNorm layers in train mode; the paper's ResNet-50
uses Fixup and has no BatchNorm).

:func:`evaluate_path` loads each point into the model and runs the loader;
:func:`evaluate_path_batched` reads each data batch once and evaluates every point on it with
``torch.func.functional_call`` (same numbers). :func:`combine` and :func:`evaluate_states`
are reused by the basin and criticality analyses.
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

from transferscope.analyses._base import AnalysisResult
from transferscope.engine.batchnorm import BatchNormFolder
from transferscope.engine.batchnorm import bn_layers as _bn_layers
from transferscope.engine.batchnorm import bn_train_mode as _bn_train
from transferscope.engine.batchnorm import reestimate_bn
from transferscope.engine.batchnorm import split_batch as _split
from transferscope.errors import ConfigError, ModelError

StateDict = Mapping[str, torch.Tensor]
State = StateDict | Callable[[], StateDict]


def _state(obj) -> StateDict:
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def combine(states: Sequence[StateDict], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """``sum_i w_i * theta_i`` for floating tensors; integer/bool tensors from the argmax weight.

    Weights need not be convex (extrapolation uses negative ones). A one-hot weight vector
    returns exact copies of that state. Sums are taken in float64 and cast back.

    Raises:
        ModelError: the states differ in keys or shapes (naming the tensor).

    Example:
        >>> a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 2.0])}
        >>> combine([a, b], [0.75, 0.25])["w"].tolist()
        [1.0, 2.0]
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
        acc = torch.zeros(t0.shape, dtype=torch.float64, device=t0.device)
        for wi, s in zip(w, states):
            if wi != 0.0:
                acc += wi * s[key].detach().to(t0.device, torch.float64)
        out[key] = acc.to(t0.dtype)
    return out


def interpolate(theta0: StateDict, theta1: StateDict, lam: float) -> dict[str, torch.Tensor]:
    """theta_lambda = (1 - lambda) theta_0 + lambda theta_1 (any real lambda).

    lambda = 0 and 1 return exact copies of the endpoints; integer buffers come from the
    endpoint nearest lambda (theta_0 on a tie at 0.5).
    """
    return combine([theta0, theta1], [1.0 - float(lam), float(lam)])


# --------------------------------------------------------------------------- evaluation
def _score(logits: torch.Tensor, y: torch.Tensor | None, acc: list) -> None:
    if y is None:
        raise ConfigError("the evaluation loader must yield (images, labels) batches")
    acc[0] += float(F.cross_entropy(logits.double(), y, reduction="sum"))
    acc[1] += int((logits.argmax(dim=1) == y).sum())
    acc[2] += int(y.numel())


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
    was = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)
        if channels_last:
            model.to(memory_format=torch.contiguous_format)


def _nhwc(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """4-d floating tensors (images, conv weights) to channels-last when asked."""
    if channels_last and t.dim() == 4 and t.is_floating_point():
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _run_loader(model: nn.Module, loader: Iterable, device, channels_last: bool = False,
                state: dict | None = None) -> list:
    acc = [0.0, 0, 0]
    with _evaluating(model, channels_last):
        for batch in loader:
            x, y = _split(batch, device)
            x = _nhwc(x, channels_last)
            out = model(x) if state is None else functional_call(model, state, (x,))
            _score(out.float(), y, acc)
    return acc


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
                  channels_last: bool = False, fold_bn: bool = True) -> pd.DataFrame:
    """Loss and accuracy along theta_lambda, one full pass over ``loader`` per lambda.

    Each point is loaded into ``model`` (restored afterwards); with ``bn_reestimate_loader``
    the BatchNorm statistics are re-estimated at each point first. ``channels_last`` runs
    NHWC (faster on CPU, float rounding differs from NCHW at ~1e-7); ``fold_bn`` evaluates
    with BatchNorm folded into the convolutions, exactly as :func:`evaluate_states` does.

    Returns:
        Columns ``lambda, point, loss, accuracy, error, n``.
    """
    def snapshot(obj):  # the states may alias the model's own tensors (model.state_dict())
        return {k: v.detach().clone() for k, v in _state(obj).items()}

    saved, t0, t1 = snapshot(model), snapshot(theta0), snapshot(theta1)
    folder = _folder(model, loader, device) if fold_bn else None
    accs = []
    try:
        for lam in lambdas:
            model.load_state_dict(interpolate(t0, t1, lam))
            if bn_reestimate_loader is not None:
                reestimate_bn(model, bn_reestimate_loader, device, channels_last)
            if folder is None:
                accs.append(_run_loader(model, loader, device, channels_last))
            else:
                accs.append(_run_loader(folder.model, loader, device, channels_last,
                                        _folded(folder, model.state_dict(), channels_last)))
    finally:
        model.load_state_dict(saved)
    return _frame(accs, {"lambda": [float(x) for x in lambdas]})


def evaluate_states(model: nn.Module, states: Sequence[State], loader: Iterable, *,
                    bn_reestimate_loader: Iterable | None = None, device=None,
                    precompute: bool = True, channels_last: bool = False,
                    fold_bn: bool = True) -> pd.DataFrame:
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
        channels_last: NHWC images and conv weights (same numbers as :func:`evaluate_path`
            with the same flag; faster on CPU).
        fold_bn: fold each BatchNorm into the convolution before it, per state, after any
            re-estimation (:class:`~transferscope.engine.batchnorm.BatchNormFolder`; faster,
            results equal to ~1e-6; skipped automatically where folding would change them).

    Returns:
        Columns ``point, loss, accuracy, error, n`` in the order of ``states``.
    """
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
                    _score(functional_call(net, st, (x,)).float(), y, accs[i])
        else:  # batches outer: each batch is decoded once for all states
            for batch in loader:
                x, y = _split(batch, device)
                x = _nhwc(x, channels_last)
                for i in range(len(fns)):
                    _score(functional_call(net, final(i), (x,)).float(), y, accs[i])
    return _frame(accs)


def evaluate_path_batched(model: nn.Module, theta0, theta1, lambdas: Sequence[float],
                          loader: Iterable, bn_reestimate_loader: Iterable | None = None,
                          device=None, precompute: bool = True,
                          channels_last: bool = False, fold_bn: bool = True) -> pd.DataFrame:
    """:func:`evaluate_path` with data outer, lambda inner (each batch decoded once)."""
    t0, t1 = _state(theta0), _state(theta1)
    df = evaluate_states(model, [lambda lam=lam: interpolate(t0, t1, lam) for lam in lambdas],
                         loader, bn_reestimate_loader=bn_reestimate_loader, device=device,
                         precompute=precompute, channels_last=channels_last, fold_bn=fold_bn)
    df.insert(0, "lambda", [float(x) for x in lambdas])
    return df


def barrier_height(df: pd.DataFrame, metric: str = "loss",
                   higher_is_better: bool | None = None) -> float:
    """Largest excess of ``metric`` over the straight line between its endpoint values.

    Only rows with lambda in [0, 1] count; rows at lambda = 0 and 1 must be present. For
    metrics where higher is better (``accuracy``, ``auc``; or ``higher_is_better=True``) the
    largest drop below the line is returned. Negative: the whole path beats the line.
    """
    if higher_is_better is None:
        higher_is_better = metric.lower() in ("accuracy", "acc", "auc", "top1")
    lam = df["lambda"].to_numpy(float)
    val = df[metric].to_numpy(float)
    at = {e: np.flatnonzero(np.isclose(lam, e)) for e in (0.0, 1.0)}
    if not all(len(v) for v in at.values()):
        raise ConfigError("barrier_height needs the path evaluated at lambda = 0 and lambda = 1;"
                          " include both endpoints in lambdas")
    m0, m1 = val[at[0.0][0]], val[at[1.0][0]]
    inside = (lam >= -1e-12) & (lam <= 1 + 1e-12)
    line = (1 - lam[inside]) * m0 + lam[inside] * m1
    excess = line - val[inside] if higher_is_better else val[inside] - line
    return float(np.max(excess))


def run(model: nn.Module, named_pairs: Mapping[str, tuple], loader: Iterable,
        lambdas: Sequence[float] | None = None, *, bn_reestimate_loader: Iterable | None = None,
        batched: bool = True, device=None, channels_last: bool = True) -> AnalysisResult:
    """Loss/accuracy along the line of every pair, with barrier heights (Figures 4, 12-18).

    ``named_pairs``: label -> ``(theta_0, theta_1)``; ``lambdas`` default to 11 points on
    [0, 1] (``np.linspace(-1, 2, 31)`` extrapolates). ``model``'s weights are left unchanged.
    ``channels_last`` (default) runs NHWC: faster on CPU, rounding differs at ~1e-7.
    """
    lambdas = list(np.linspace(0, 1, 11) if lambdas is None else lambdas)
    frames, summary = [], {}
    fn = evaluate_path_batched if batched else evaluate_path
    for name, (t0, t1) in named_pairs.items():
        df = fn(model, t0, t1, lambdas, loader, bn_reestimate_loader, device,
                channels_last=channels_last)
        frames.append(df.assign(pair=name))
        has_ends = any(np.isclose(lambdas, 0)) and any(np.isclose(lambdas, 1))
        summary[name] = {
            "loss_barrier": barrier_height(df, "loss") if has_ends else float("nan"),
            "accuracy_barrier": barrier_height(df, "accuracy") if has_ends else float("nan"),
            "min_loss": float(df["loss"].min()), "max_accuracy": float(df["accuracy"].max())}
    table = pd.concat(frames, ignore_index=True).drop(columns=["point"])
    result = AnalysisResult("barriers", summary, {"path": table[["pair"] + [
        c for c in table.columns if c != "pair"]]})
    for metric in ("accuracy", "loss"):
        result.figures[f"path_{metric}"] = plot_paths(table, metric)
    result.notes.append("Barrier height: max over lambda in [0,1] of the loss above (accuracy "
                        "below) the straight line between the endpoint values." +
                        (" BatchNorm statistics re-estimated at every point."
                         if bn_reestimate_loader is not None else ""))
    return result


def plot_paths(table: pd.DataFrame, metric: str):
    """One curve per pair: ``metric`` against lambda, endpoints marked by dotted lines."""
    from transferscope.analyses._plots import subplots

    fig, ax = subplots(figsize=(5.5, 3.5))
    for name, part in table.groupby("pair", sort=False):
        ax.plot(part["lambda"], part[metric], marker="o", markersize=3, label=str(name))
    for x in (0, 1):
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("lambda")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

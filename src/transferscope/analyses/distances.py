"""l2 distances in parameter space (paper 003, section 3.2 "Distance in parameter space",
Table 2, Appendix B.3 Figures 10-11, Table 8).

Two trained instances are compared by the Euclidean (l2) distance of their parameters,
module by module and for the whole network:

    d(theta, theta') = sqrt( sum_k (theta_k - theta'_k)^2 )

summed over the elements k of a module (a :class:`~transferscope.models.LayerGroup`) or of
all parameters. The same measure against the starting point gives the distance to
initialisation (Figure 11, Table 8). Only *parameters* count; buffers such as BatchNorm
running statistics and ``num_batches_tracked`` are excluded. The total is computed over every
parameter of the model (it is the root of the summed squared per-module distances when the
layer groups cover all parameters).
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.transferability import check_state_dicts, parameter_groups
from transferscope.errors import ModelError
from transferscope.models.base import TransferModel

StateDict = Mapping[str, torch.Tensor]


def _state(obj) -> StateDict:
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def squared_l2(a: StateDict, b: StateDict, names: Sequence[str]) -> float:
    """``sum_k (a_k - b_k)^2`` over the named tensors, in float64."""
    total = 0.0
    for name in names:
        x = a[name].detach().to("cpu", torch.float64)
        y = b[name].detach().to("cpu", torch.float64)
        total += float((x - y).square().sum())
    return total


def l2_distance(a: StateDict, b: StateDict, names: Sequence[str], *,
                labels: tuple[str, str] = ("a", "b")) -> float:
    """Euclidean distance of the named tensors of two state dicts.

    Raises:
        ModelError: a name is missing from one dict or has another shape there.

    Example:
        >>> l2_distance({"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([0.0, 4.0])}, ["w"])
        5.0
    """
    names = list(names)
    check_state_dicts({labels[0]: _state(a), labels[1]: _state(b)}, names)
    return math.sqrt(squared_l2(_state(a), _state(b), names))


def layer_distances(a, b, groups_from: TransferModel, *,
                    labels: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    """Per-layer-group and total l2 distance between two parameter sets.

    Args:
        a, b: state dicts (or modules) with the uniform ``backbone.*`` / ``head.*`` keys.
        groups_from: a model of the architecture: its layer groups and parameter names.
        labels: how ``a`` and ``b`` are named in error messages.

    Returns:
        Rows ``layer, l2, n_params, is_classifier``, one per group in order, then ``"total"``
        (all parameters of ``groups_from``, ``is_classifier`` False).
    """
    sa, sb = _state(a), _state(b)
    dicts = {labels[0]: sa, labels[1]: sb}
    rows = []
    for name, params, is_cls in parameter_groups(groups_from):
        check_state_dicts(dicts, params, layer=name)
        n = sum(sa[p].numel() for p in params)
        rows.append({"layer": name, "l2": math.sqrt(squared_l2(sa, sb, params)) if n else
                     math.nan, "n_params": n, "is_classifier": is_cls})
    every = [n for n, _ in groups_from.named_parameters()]
    check_state_dicts(dicts, every)
    rows.append({"layer": "total", "l2": math.sqrt(squared_l2(sa, sb, every)),
                 "n_params": sum(sa[p].numel() for p in every), "is_classifier": False})
    return pd.DataFrame(rows)


def run(named_states: Mapping[str, object], groups_from: TransferModel,
        init: Mapping[str, object] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None) -> AnalysisResult:
    """Table 2 / Figure 10 (pairwise) and Table 8 / Figure 11 (distance to initialisation).

    Args:
        named_states: model name (``"P-T #1"``, ``"RI-T #1"``, ``"P"``) -> state dict/module.
        groups_from: a model of the architecture, for layer groups and parameter names.
        init: model name -> the state that model started from (e.g. ``{"P-T #1": P,
            "RI-T #1": RI}``); names must appear in ``named_states``.
        pairs: which pairs to compare (default: every pair).

    Raises:
        ModelError: a parameter is missing or has another shape, naming it and its layer.
    """
    names = list(named_states)
    pairs = [tuple(p) for p in (pairs if pairs is not None else itertools.combinations(names, 2))]
    for p in pairs:
        for k in p:
            if k not in named_states:
                raise ModelError(f"distance pair {p} names {k!r}, which is not among the given "
                                 f"states ({', '.join(names)})")
    rows, summary = [], {"pairwise_total": {}, "to_init_total": {}}
    for a, b in pairs:
        t = layer_distances(named_states[a], named_states[b], groups_from, labels=(a, b))
        rows.append(t.assign(pair=f"{a} & {b}"))
        summary["pairwise_total"][f"{a} & {b}"] = float(t["l2"].iloc[-1])
    init_rows = []
    for k, start in (init or {}).items():
        if k not in named_states:
            raise ModelError(f"init is given for {k!r}, which is not among the given states "
                             f"({', '.join(names)})")
        t = layer_distances(named_states[k], start, groups_from, labels=(k, f"init of {k}"))
        init_rows.append(t.assign(model=k))
        summary["to_init_total"][k] = float(t["l2"].iloc[-1])
    tables = {}
    if rows:
        tables["pairwise"] = _front(pd.concat(rows, ignore_index=True), "pair")
    if init_rows:
        tables["to_init"] = _front(pd.concat(init_rows, ignore_index=True), "model")
    result = AnalysisResult("distances", summary, tables)
    if rows:
        result.figures["pairwise_per_module"] = plot_per_module(
            tables["pairwise"], "pair", "l2 distance between models")
    if init_rows:
        result.figures["to_init_per_module"] = plot_per_module(
            tables["to_init"], "model", "l2 distance to initialisation")
    result.notes.append("l2 over parameters only (BatchNorm running statistics and other "
                        "buffers excluded); 'total' covers every parameter of the model.")
    return result


def _front(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df[[col] + [c for c in df.columns if c != col]]


def plot_per_module(table: pd.DataFrame, by: str, ylabel: str):
    """Figures 10 / 11: one line per pair (or model), x = layer group, y = l2 distance."""
    from transferscope.analyses._plots import subplots

    body = table[table["layer"] != "total"]
    layers = list(dict.fromkeys(body["layer"]))
    fig, ax = subplots(figsize=(max(5.0, 0.3 * len(layers) + 2), 3.5))
    for key, part in body.groupby(by, sort=False):
        ax.plot([layers.index(x) for x in part["layer"]], part["l2"], marker="o", markersize=3,
                label=str(key))
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=90, fontsize=6)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

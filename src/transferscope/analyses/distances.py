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

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, fmt, register_analysis
from transferscope.analyses._transfer import transfer_inputs
from transferscope.analyses._weights import check_state_dicts, parameter_groups
from transferscope.analyses.context import AuditContext
from transferscope.errors import ModelError
from transferscope.findings import ClaimCheck
from transferscope.stats import Verdict, cluster_statistic, too_few, verdict_of
from transferscope.models.base import TransferModel

__all__ = ["distance_check", "distance_tables", "finding", "l2_distance", "layer_distances",
           "MIN_PAIRS", "plot_per_module", "run", "run_pairs", "squared_l2", "StateDict"]

StateDict = Mapping[str, torch.Tensor]
#: fewer independent pairs of runs of each kind: paper 003's comparison cannot be told
#: (with 4 against 4 an exact rank test can first reach p < 0.05)
MIN_PAIRS = 4


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
                    labels: tuple[str, str] = ("a", "b"),
                    head_mismatch: str = "raise") -> pd.DataFrame:
    """Per-layer-group and total l2 distance between two parameter sets.

    Args:
        a, b: state dicts (or modules) with the uniform ``backbone.*`` / ``head.*`` keys.
        groups_from: a model of the architecture: its layer groups and parameter names.
        labels: how ``a`` and ``b`` are named in error messages.
        head_mismatch: ``"raise"`` (default) or ``"skip"``: classifier groups whose shapes
            differ (P's source head against a target model's head, Table 2's "P-T & P")
            get l2 NaN and are left out of the total.

    Returns:
        Rows ``layer, l2, n_params, is_classifier``, one per group in order, then ``"total"``
        (all parameters of ``groups_from`` - less a skipped head - ``is_classifier`` False).
    """
    if head_mismatch not in ("raise", "skip"):
        raise ModelError(f"head_mismatch must be 'raise' or 'skip', got {head_mismatch!r}")
    sa, sb = _state(a), _state(b)
    dicts = {labels[0]: sa, labels[1]: sb}
    rows, skipped = [], set()
    for name, params, is_cls in parameter_groups(groups_from):
        if is_cls and head_mismatch == "skip" and any(
                p in sa and p in sb and sa[p].shape != sb[p].shape for p in params):
            skipped.update(params)
            rows.append({"layer": name, "l2": math.nan, "n_params": 0, "is_classifier": True})
            continue
        check_state_dicts(dicts, params, layer=name)
        n = sum(sa[p].numel() for p in params)
        rows.append({"layer": name, "l2": math.sqrt(squared_l2(sa, sb, params)) if n else
                     math.nan, "n_params": n, "is_classifier": is_cls})
    every = [n for n, _ in groups_from.named_parameters() if n not in skipped]
    check_state_dicts(dicts, every)
    rows.append({"layer": "total", "l2": math.sqrt(squared_l2(sa, sb, every)),
                 "n_params": sum(sa[p].numel() for p in every), "is_classifier": False})
    return pd.DataFrame(rows)


def distance_tables(named_states: Mapping[str, object], groups_from: TransferModel,
                    init: Mapping[str, object] | None = None,
                    pairs: Sequence[tuple[str, str]] | None = None,
                    head_mismatch: str = "raise") -> AnalysisResult:
    """Table 2 / Figure 10 (pairwise) and Table 8 / Figure 11 (distance to initialisation).

    Args:
        named_states: model name (``"P-T #1"``, ``"RI-T #1"``, ``"P"``) -> state dict/module.
        groups_from: a model of the architecture, for layer groups and parameter names.
        init: model name -> the state that model started from (e.g. ``{"P-T #1": P,
            "RI-T #1": RI}``); names must appear in ``named_states``.
        pairs: which pairs to compare (default: every pair), e.g. Table 2's "2 P-T",
            "2 RI-T", "P-T & P" and "RI-T & P".
        head_mismatch: ``"skip"`` compares models with different heads (P against a target
            model) on every other parameter (see :func:`layer_distances`).

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
        t = layer_distances(named_states[a], named_states[b], groups_from, labels=(a, b),
                            head_mismatch=head_mismatch)
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
                        "buffers excluded); 'total' covers every parameter of the model" +
                        (", except a classifier head whose shape differs between the two "
                         "models (pairs with P)." if head_mismatch == "skip" else "."))
    return result


def _front(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df[[col] + [c for c in df.columns if c != col]]


def plot_per_module(table: pd.DataFrame, by: str, ylabel: str):
    """Figures 10 / 11: one line per pair (or model), x = layer group, y = l2 distance."""
    from transferscope.analyses._figures import subplots

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


def run_pairs(states: Mapping[str, object], groups_from: TransferModel) -> dict:
    """Whole-network l2 of independent pairs of runs per kind: ``P-T #1 & P-T #2``,
    ``P-T #3 & P-T #4``, ... (no run in two pairs), the unit of paper 003's comparison."""
    out: dict[str, dict[str, float]] = {}
    for kind in ("P-T", "RI-T"):
        runs = sorted((k for k in states if k.startswith(f"{kind} #")),
                      key=lambda k: int(k.rsplit("#", 1)[1]))
        out[kind] = {f"{a} & {b}": float(layer_distances(states[a], states[b], groups_from,
                                                         labels=(a, b))["l2"].iloc[-1])
                     for a, b in zip(runs[::2], runs[1::2])}
    return out


def run(ctx: AuditContext) -> AnalysisResult:
    """l2 distances between the P-T / RI-T models of ``ctx``, to the source P (paper 003,
    Table 2: P-T & P, RI-T & P) and to their initial weights."""
    inp = transfer_inputs(ctx)
    with_p = [(k, "P") for k in inp.models if k.endswith("#1")]
    states = {**{k: m.state_dict() for k, m in inp.models.items()}, "P": ctx.source.state_dict()}
    res = distance_tables(states, inp.first, init=inp.inits or None,
                          pairs=list(inp.pairs) + with_p, head_mismatch="skip")
    res.summary["run_pairs"] = run_pairs(states, inp.first)
    return res


def distance_check(pairs: Mapping[str, Mapping[str, float]]) -> ClaimCheck:
    """Paper 003's "two P-T models are closer in l2 than two RI-T models": the unit is an
    independent pair of runs; RI-T minus P-T mean distance with a bootstrap over pairs within
    each kind, and cannot tell below :data:`MIN_PAIRS` pairs of each kind."""
    pt, ri = list(pairs.get("P-T", {}).values()), list(pairs.get("RI-T", {}).values())
    test = "RI-T minus P-T pair distance, bootstrap over pairs of runs within each kind"
    seen = (f"these runs: P-T {', '.join(fmt(x) for x in pt) or 'none'}; RI-T "
            f"{', '.join(fmt(x) for x in ri) or 'none'}")
    if not pt or not ri:
        return ClaimCheck("003.distance", Verdict.NOT_TESTED, "needs a pair of P-T and a pair "
                          "of RI-T runs", None, test)
    few = too_few(min(len(pt), len(ri)), MIN_PAIRS, "independent pairs of runs per kind")
    if few:
        one = "one pair of runs: " if min(len(pt), len(ri)) == 1 else ""
        return ClaimCheck("003.distance", Verdict.CANNOT_TELL, f"{one}{few}; {seen}", None,
                          test)
    vals = np.array(pt + ri)
    kind = np.array([0] * len(pt) + [1] * len(ri))

    def diff(i):
        k = kind[i]
        return float(vals[i][k == 1].mean() - vals[i][k == 0].mean())
    iv = cluster_statistic(diff, len(vals), strata=kind, unit="pair of runs")
    verdict, why = verdict_of(iv, ">")
    return ClaimCheck("003.distance", verdict, f"RI-T minus P-T {iv}: {why}", iv, test)


def finding(result: AnalysisResult) -> Finding | None:
    """Whole-network distances between pairs and to the initial weights; paper 003's claim
    on P-T against RI-T pairs."""
    s = result.summary
    parts = [f"{k} {fmt(v)}" for k, v in s["pairwise_total"].items()]
    parts += [f"{k} to its init {fmt(v)}" for k, v in s["to_init_total"].items()]
    pairs = s.get("run_pairs")
    checks = (distance_check(pairs),) if pairs else ()
    return Finding("Parameter distances", "(l2 over the whole network; paper 003: P-T models "
                   "stay close to each other and to P)", clauses=tuple(parts), checks=checks,
                   numbers={**s["pairwise_total"], **s["to_init_total"]})


register_analysis("distances", title="Parameter distances, l2 per module",
                  paper="paper 003, Table 2, 8", section="what_transferred", order=4, run=run,
                  finding=finding, applies=lambda ctx: len(transfer_inputs(ctx).models) >= 2)

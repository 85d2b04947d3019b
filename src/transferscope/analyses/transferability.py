"""Parameter transferability, per layer and for the whole network (paper 002, eq. 1-2, Fig. 8).

Pre-training is useful to a downstream task B if it starts the parameters closer to a solution
of B than a random start does. With ``D`` the mean absolute difference of two parameter sets
(pooled over all their elements), the transferability of the pre-trained parameters theta_A is
the ratio of the distance a random start theta_r would have had to travel to the distance the
pre-trained start travelled (eq. 1)::

    T_B(theta_A) = D(theta_r, theta_B) / D(theta_A, theta_B)

T = 1 is what a random start scores; T > 1 means pre-training shortened the way. theta_B is
ambiguous, so both variants of the paper are computed: T_FB with theta_B = the fine-tuned
parameters, T_SB with theta_B = the parameters trained from scratch (starting at theta_r).
Layers differ in parameter scale, so the network-level value is the plain mean of the
per-layer values (eq. 2), leaving out the classifier, which is task specific.

T_SB needs a scratch run that has *arrived* somewhere. A run of a few epochs barely leaves
theta_r, so ``D(theta_r, theta_SB)`` is tiny while ``D(theta_A, theta_SB)`` stays about
``D(theta_A, theta_r)``, and T_SB lands far below 1 whatever pre-training did (paper 002's
Table 2 has 1.83-6.94 for every data set). Rule used here: a scratch run is *short* when, in
more than half of the non-classifier layers, it moved less than half the distance between the
two starts, ``D(theta_r, theta_SB) < D(theta_A, theta_r) / 2``; in such a layer T_SB < 1
follows from the triangle inequality alone. The finding then says so instead of reading T_SB.

Layers are the model's :class:`~transferscope.models.LayerGroup` objects. Only *parameters*
count: a normalisation layer's weight and bias belong to the group of its conv (the groups
already pair them), while running statistics and other buffers are left out.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferscope import roles
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, fmt, register_analysis
from transferscope.findings import ClaimCheck
from transferscope.stats import Interval, Verdict, too_few, verdict_of
from transferscope.analyses._weights import (ParamGroup, StateDict,  # noqa: F401 (re-exported)
                                             check_state_dicts, parameter_groups)
from transferscope.analyses._weights import state_of as _state
from transferscope.analyses.context import AuditContext
from transferscope.errors import ModelError
from transferscope.models.base import LayerGroup, TransferModel

__all__ = ["finding", "first_vs_max", "layer_transferability", "lower_layers_check",
           "mean_abs_diff", "MIN_TASKS", "network_transferability", "PAPER_T_SB", "plot_layer_T",
           "run", "scratch_travel", "SHORT_LAYERS", "SHORT_TRAVEL", "transferability_result",
           "whole_network_T"]


def _resolve(groups, model: nn.Module | None) -> list[ParamGroup]:
    if isinstance(groups, TransferModel):
        return parameter_groups(groups)
    out = []
    for g in groups:
        if isinstance(g, LayerGroup):
            if model is None:
                raise ModelError(f"layer group {g.name!r} needs the model that owns it to list "
                                 "its parameters; pass model=... or the TransferModel itself")
            g = (g.name, g.parameter_names(model), g.is_classifier)
        out.append((str(g[0]), list(g[1]), bool(g[2])))
    return out


def _abs_diff_sum(a: StateDict, b: StateDict, names: Sequence[str]) -> tuple[float, int]:
    total, count = 0.0, 0
    for name in names:
        x = a[name].detach().to("cpu", torch.float64)
        y = b[name].detach().to("cpu", torch.float64)
        total += float((x - y).abs().sum())
        count += x.numel()
    return total, count


def mean_abs_diff(a: StateDict, b: StateDict, names: Sequence[str]) -> float:
    """D(a, b) of paper 002: ``sum |a_i - b_i| / K`` over all K elements of the named tensors.

    Elements are pooled, so a large tensor weighs more than a small one. Computed in float64.

    Example:
        >>> a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
        >>> b = {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([3.0])}
        >>> mean_abs_diff(a, b, ["w", "b"])
        2.0
    """
    names = list(names)
    check_state_dicts({"a": a, "b": b}, names)
    total, count = _abs_diff_sum(a, b, names)
    if count == 0:
        raise ModelError(f"no parameter elements to compare in {names}; give at least one "
                         "non-empty parameter")
    return total / count


def layer_transferability(theta_a, theta_b, theta_r, groups, *, model: nn.Module | None = None,
                          b_label: str = "theta_B") -> pd.DataFrame:
    """Eq. 1 per layer group: ``T = D(theta_r, theta_B) / D(theta_A, theta_B)``.

    Args:
        theta_a, theta_b, theta_r: state dicts (or modules) with the uniform ``backbone.*`` /
            ``head.*`` keys: the start of fine-tuning, the solution of task B, the random start.
        groups: a :class:`TransferModel` (its layer groups), ``LayerGroup`` objects (then
            ``model`` lists their parameters) or ``(name, parameter names, is_classifier)``.
        b_label: how theta_B is named in error messages (``"theta_FB (fine-tuned)"``).

    Returns:
        One row per group: ``layer, D(theta_r, theta_B), D(theta_A, theta_B), T, n_params,
        is_classifier, finite, note``. When ``D(theta_A, theta_B) = 0`` (theta_A already is the
        solution) T is ``inf`` (``nan`` if theta_r is too), ``finite`` is False and ``note``
        says why; a group without parameters gets ``nan``.

    Raises:
        ModelError: a parameter is missing or has another shape in one of the dicts.
    """
    dicts = {"theta_A": _state(theta_a), b_label: _state(theta_b), "theta_r": _state(theta_r)}
    sd_a, sd_b, sd_r = dicts.values()
    rows = []
    for name, params, is_cls in _resolve(groups, model):
        check_state_dicts(dicts, params, layer=name)
        d_rb, n = _abs_diff_sum(sd_r, sd_b, params)
        d_ab, _ = _abs_diff_sum(sd_a, sd_b, params)
        note = ""
        if n == 0:
            d_rb = d_ab = t = math.nan
            note = "no parameters"
        else:
            d_rb, d_ab = d_rb / n, d_ab / n
            if d_ab > 0:
                t = d_rb / d_ab
            elif d_rb > 0:
                t, note = math.inf, "D(theta_A, theta_B) = 0: theta_A already equals theta_B"
            else:
                t, note = math.nan, "theta_A, theta_B and theta_r are equal: T undefined"
        rows.append({"layer": name, "D(theta_r, theta_B)": d_rb, "D(theta_A, theta_B)": d_ab,
                     "T": t, "n_params": n, "is_classifier": is_cls,
                     "finite": bool(np.isfinite(t)), "note": note})
    return pd.DataFrame(rows)


def whole_network_T(table: pd.DataFrame) -> float:
    """Eq. 2: mean of the per-layer T over the non-classifier layers with a finite T.

    Layers with ``inf``/``nan`` T (see :func:`layer_transferability`) are left out of both
    sum and count; ``nan`` when no layer is left.
    """
    keep = ~table["is_classifier"].astype(bool) & np.isfinite(table["T"].astype(float))
    return float(table.loc[keep, "T"].mean()) if keep.any() else math.nan


#: a scratch run is short when it moved less than this share of D(theta_A, theta_r) ...
SHORT_TRAVEL = 0.5
#: ... in more than this share of the non-classifier layers
SHORT_LAYERS = 0.5
#: paper 002, Table 2: the range of T_SB over its twelve data sets
PAPER_T_SB = (1.83, 6.94)


def scratch_travel(sb_table: pd.DataFrame, start: pd.DataFrame) -> dict:
    """How far the scratch run moved, against the distance between the two starts.

    ``sb_table``: :func:`layer_transferability` with theta_B = theta_SB; ``start``: the same
    with theta_B = theta_r (its ``D(theta_A, theta_B)`` column is ``D(theta_A, theta_r)``).
    Returns ``ratio`` (median over non-classifier layers of ``D(theta_r, theta_SB) /
    D(theta_A, theta_r)``), ``short_layers`` / ``layers`` (layers below :data:`SHORT_TRAVEL`)
    and ``short`` (more than :data:`SHORT_LAYERS` of them).

    Example:
        >>> sb = pd.DataFrame({"D(theta_r, theta_B)": [0.01, 0.02, 0.5], "is_classifier":
        ...                    [False, False, True]})
        >>> st = pd.DataFrame({"D(theta_A, theta_B)": [1.0, 1.0, 0.0]})
        >>> r = scratch_travel(sb, st); (r["short"], r["short_layers"], r["layers"])
        (True, 2, 2)
    """
    moved = sb_table["D(theta_r, theta_B)"].astype(float).to_numpy()
    apart = start["D(theta_A, theta_B)"].astype(float).to_numpy()
    keep = ~sb_table["is_classifier"].astype(bool).to_numpy() & (apart > 0) & np.isfinite(moved)
    ratio = moved[keep] / apart[keep]
    n_short = int((ratio < SHORT_TRAVEL).sum())
    return {"ratio": float(np.median(ratio)) if ratio.size else math.nan,
            "short_layers": n_short, "layers": int(ratio.size),
            "short": bool(ratio.size) and n_short > SHORT_LAYERS * ratio.size}


def first_vs_max(table: pd.DataFrame) -> dict:
    """The first non-classifier layer group's T against the highest T of those groups
    (finite values only): ``first``, ``T_first``, ``T_max``, ``max_layer``, ``first_is_max``."""
    t = table[~table["is_classifier"].astype(bool) & np.isfinite(table["T"].astype(float))]
    if t.empty:
        return {"first": None, "T_first": math.nan, "T_max": math.nan, "max_layer": None,
                "first_is_max": None}
    top = t.loc[t["T"].astype(float).idxmax()]
    first = t.iloc[0]
    return {"first": str(first["layer"]), "T_first": float(first["T"]),
            "T_max": float(top["T"]), "max_layer": str(top["layer"]),
            "first_is_max": bool(float(first["T"]) >= float(top["T"]))}


def network_transferability(groups_from: TransferModel, theta_a, theta_r, fine_tuned, scratch,
                            label: str = "") -> AnalysisResult:
    """T_FB and T_SB per layer and for the whole network (eq. 1-2, Fig. 8).

    Args:
        groups_from: a model of the architecture, used for its layer groups.
        theta_a: the state at the start of fine-tuning (pre-trained backbone, new head).
        theta_r: the random start, the same one the scratch run began from.
        fine_tuned, scratch: theta_FB and theta_SB after training on task B.
        label: names the target task in tables, summary and figure.
    """
    tables, summary, rows = {}, {}, []
    start = layer_transferability(theta_a, theta_r, theta_r, groups_from, b_label="theta_r (as theta_B)")
    for key, theta_b, what in (("T_FB", fine_tuned, "theta_FB (fine-tuned)"),
                               ("T_SB", scratch, "theta_SB (from scratch)")):
        table = layer_transferability(theta_a, theta_b, theta_r, groups_from, b_label=what)
        table["D(theta_A, theta_r)"] = start["D(theta_A, theta_B)"].to_numpy()
        tables[key] = table
        summary[key] = whole_network_T(table)
        summary[f"{key}_non_finite_layers"] = table.loc[~table["finite"], "layer"].tolist()
        rows.append(table.assign(variant=key, target=label))
    name = f"{label} " if label else ""
    summary.update(label=label, layers=int(len(tables["T_FB"])),
                   scratch=scratch_travel(tables["T_SB"], start),
                   lowest=first_vs_max(tables["T_FB"]))
    long = pd.concat(rows, ignore_index=True)
    long = long[["target", "variant"] + [c for c in long.columns if c not in ("target", "variant")]]
    result = AnalysisResult("transferability", summary, {"layers": long})
    result.figures["layer_T"] = plot_layer_T({f"{name}{k}": t for k, t in tables.items()})
    result.notes += [
        "D is the mean absolute difference pooled over the parameter elements of a layer group; "
        "normalisation weights/biases count with their conv, running statistics are excluded.",
        "Whole-network T (eq. 2) averages the finite per-layer T of all layers except the "
        "classifier.",
        f"A scratch run counts as short when in more than {SHORT_LAYERS:.0%} of the "
        f"non-classifier layers it moved less than {SHORT_TRAVEL:g} x D(theta_A, theta_r) from "
        "theta_r; T_SB < 1 then follows from the triangle inequality, not from what "
        "pre-training did."]
    return result


def transferability_result(per_target: dict[str, AnalysisResult],
                           table2: pd.DataFrame | None = None,
                           notes: Sequence[str] = ()) -> AnalysisResult:
    """One ``transferability`` result from the :func:`network_transferability` result of
    every target: whole-network T_FB / T_SB per target, all layer rows (and paper 002's
    Table 2 when given), one line per target in the figure."""
    layers = pd.concat([r.tables["layers"] for r in per_target.values()], ignore_index=True)
    tables = {"table2": table2} if table2 is not None else {}
    keys = ("T_FB", "T_SB", "scratch", "lowest")
    result = AnalysisResult(
        "transferability", {k: {x: v.summary[x] for x in keys if x in v.summary}
                            for k, v in per_target.items()},
        {**tables, "layers": layers}, notes=next(iter(per_target.values())).notes + list(notes))
    result.figures["layer_T_FB"] = plot_layer_T(
        {k: layers[(layers["target"] == k) & (layers["variant"] == "T_FB")]
         for k in per_target})
    return result


def plot_layer_T(tables: dict[str, pd.DataFrame]):
    """One line per table (e.g. per target set): x = layer group, y = T (log scale if spread).

    Non-finite T values are not drawn; the dashed line marks T = 1 (a random start).
    """
    from transferscope.analyses._figures import subplots

    fig, ax = subplots(figsize=(max(6.0, 0.25 * max(map(len, tables.values()), default=0)),
                                    3.5))
    longest, values = [], []
    for name, table in tables.items():
        t = table["T"].astype(float).to_numpy()
        ok = np.isfinite(t)
        ax.plot(np.arange(len(t))[ok], t[ok], marker="o", markersize=3, label=name)
        values += list(t[ok])
        if len(table) > len(longest):
            longest = list(table["layer"])
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    pos = np.array([v for v in values if v > 0])
    if len(pos) and pos.max() / pos.min() > 20:
        ax.set_yscale("log")
    ax.set_xticks(range(len(longest)))
    ax.set_xticklabels(longest, rotation=90, fontsize=6)
    ax.set_xlabel("layer group (input to output)")
    ax.set_ylabel("transferability T")
    if tables:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _pairs(ctx: AuditContext) -> dict[str, str]:
    """Fine-tuned model -> the from-scratch model of its architecture and seed (they share
    theta_r), for models with run directories."""
    e = ctx.entries
    scratch = [n for n in ctx.with_role(roles.RIT, same_arch=False) if e[n].run_dir]
    out = {}
    for ft in ctx.with_role(roles.PT, same_arch=False):
        match = [n for n in scratch if e[n].arch == e[ft].arch and e[n].seed == e[ft].seed]
        if e[ft].run_dir and match:
            out[ft] = match[0]
    return out


def run(ctx: AuditContext) -> AnalysisResult:
    """T_FB and T_SB of every fine-tuned model of ``ctx`` with its from-scratch twin (same
    architecture and seed: the fine-tune's head and the scratch run start from one theta_r)."""
    from transferscope.engine import load_run

    per = {}
    for ft, sc in _pairs(ctx).items():
        theta_a = load_run(ctx.entries[ft].run_dir, "init")
        theta_r = load_run(ctx.entries[sc].run_dir, "init_random")
        per[ft] = network_transferability(theta_a, theta_a.state_dict(), theta_r.state_dict(),
                                          ctx.targets[ft].state_dict(),
                                          ctx.targets[sc].state_dict(), label=ft)
    return transferability_result(per)


#: target tasks (data sets) below which the share of "first layer not the most
#: transferable" gets no interval
MIN_TASKS = 4


def lower_layers_check(targets: dict) -> ClaimCheck | None:
    """002.lower_layers from ``{target: summary}`` (each with ``lowest``, see
    :func:`first_vs_max`): per target task, is the first layer group's T_FB below the highest?

    Sweep variants (labels with ``@``) are not separate tasks. With fewer than
    :data:`MIN_TASKS` tasks the verdict is "cannot tell" and says what these runs show; with
    more, the share of tasks whose first layer is not the most transferable gets an exact
    (Clopper-Pearson) interval over tasks, which must lie above 1/2 ("usually").
    """
    from scipy.stats import binomtest

    rows = {k: v["lowest"] for k, v in targets.items()
            if "@" not in str(k) and isinstance(v.get("lowest"), dict)
            and v["lowest"].get("first_is_max") is not None}
    if not rows:
        return None
    n, k = len(rows), sum(not r["first_is_max"] for r in rows.values())
    seen = "; ".join(f"{t}: {r['first']} {fmt(r['T_first'])} vs highest {fmt(r['T_max'])} "
                     f"({r['max_layer']})" for t, r in rows.items())
    test = ("first non-classifier layer group's T_FB against the highest T_FB of those groups, "
            "per target task; share of tasks where it is not the highest")
    few = too_few(n, MIN_TASKS, "target tasks")
    if few:
        iv = Interval(k / n, math.nan, math.nan, "target task", n, method="share of tasks")
        lead = ("in these runs the lowest layer group is not the most transferable"
                if k == n else "in these runs the lowest layer group is the most transferable"
                if k == 0 else f"in {k} of {n} target tasks the lowest layer group is not the "
                "most transferable")
        return ClaimCheck("002.lower_layers", Verdict.CANNOT_TELL,
                          f"{lead} ({seen}); with one fine-tuned and one scratch run per target "
                          f"this cannot tell beyond these runs - {few}", iv, test)
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    iv = Interval(k / n, float(ci.low), float(ci.high), "target task", n,
                  method="Clopper-Pearson exact")
    verdict, why = verdict_of(iv, ">", 0.5)
    return ClaimCheck("002.lower_layers", verdict,
                      f"{k} of {n} target tasks have a lowest layer group below the highest "
                      f"T_FB; {why} (one run per kind and task: about these runs)", iv, test)


def _short_caveat(targets: dict) -> str:
    short = {k: v for k, v in targets.items() if (v.get("scratch") or {}).get("short")}
    if not short:
        return ""
    below = [k for k, v in short.items() if v["T_SB"] < 1]
    detail = "; ".join(f"{k}: moved a median {fmt(v['scratch']['ratio'])} of the distance "
                       f"between the starts, under {SHORT_TRAVEL:g} in "
                       f"{v['scratch']['short_layers']} of {v['scratch']['layers']} layers"
                       for k, v in short.items())
    head = ("T_SB < 1 here says the scratch run is short, not that pre-training hurts"
            if below else "the scratch run is short, so T_SB is not comparable with the paper's")
    return (f"{head} ({detail}; paper 002's Table 2 has T_SB {PAPER_T_SB[0]:g}-"
            f"{PAPER_T_SB[1]:g} after 100 epochs)")


def finding(result: AnalysisResult) -> Finding | None:
    """Whole-network T_FB and T_SB per target, whether the scratch runs are too short to
    read T_SB, and the claim that the lowest layers are usually not the most transferable."""
    s = {k: v for k, v in result.summary.items() if isinstance(v, dict) and "T_FB" in v}
    if not s:
        return None
    check = lower_layers_check(s)
    caveat = _short_caveat(s)
    return Finding("Transferability", "(1 = no better than a random start)",
                   clauses=tuple(f"{k} T_FB {fmt(v['T_FB'])}, T_SB {fmt(v['T_SB'])}"
                                 for k, v in s.items()),
                   checks=(check,) if check else (), caveat=caveat,
                   next_step="train the scratch run to convergence (paper 002: 100 epochs) "
                   "before reading T_SB" if caveat else "",
                   numbers={k: v["T_FB"] for k, v in s.items()})


register_analysis("transferability", title="Layer-wise transferability T = D(theta_r, theta_B) "
                  "/ D(theta_A, theta_B)", paper="paper 002, eq. 1-2, Table 2, Fig. 8",
                  section="transferability", order=1, run=run, finding=finding,
                  applies=lambda ctx: bool(_pairs(ctx)))

"""What explains transferability: log T against gap, width and data amount (paper 002, eq. 3,
Fig. 4).

Ordinary least squares of ``log T`` on ``[G, W, log N, 1]`` over target tasks, with G the
domain gap, W the domain width and N the number of training images (the columns ``gap``,
``width``, ``N`` of :mod:`.domain`'s table). Logs are natural. The size of a coefficient
depends on the units of its factor (the paper does not state its scaling), so compare signs
and fit quality, or pass ``standardize=True`` to fit per-standard-deviation coefficients.

Paper 002's claim that a larger domain gap brings lower transferability is checked on its own
(:func:`gap_check`): the slope of ``log T_FB`` on the gap alone, with a bootstrap interval
that resamples target data sets (sweep variants ``name@...`` of one data set move together),
from 4 data sets on; below that the verdict is "cannot tell".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, fmt, register_analysis
from transferscope.errors import ConfigError
from transferscope.findings import ClaimCheck
from transferscope.stats import Interval, Verdict, cluster_statistic, too_few, verdict_of

__all__ = ["COEFFICIENTS", "FACTORS", "finding", "fit_factors", "fit_log_T", "gap_check",
           "MIN_TASKS"]

FACTORS = ("gap", "width", "log_N")
#: distinct target data sets below which the gap claim gets no verdict
MIN_TASKS = 4
COEFFICIENTS = FACTORS + ("intercept",)


def fit_log_T(table: pd.DataFrame, target_col: str = "T_FB", *,
              standardize: bool = False) -> dict:
    """Eq. 3: least squares ``log T = a G + b W + c log N + d`` (``numpy.linalg.lstsq``).

    Args:
        table: one row per target task with ``gap``, ``width``, ``N`` and ``target_col``.
        standardize: z-score G, W and log N first (population std) so that coefficients are
            per standard deviation of the factor.

    Returns:
        ``coefficients`` (dict over :data:`COEFFICIENTS`), ``r2`` (1 - SS_res/SS_tot; nan if
        log T is constant), ``fitted`` and ``measured`` (log T, arrays over the rows used),
        ``rows`` (their index labels), ``dropped`` (labels of rows with T <= 0 or non-finite
        values), ``n``, ``rank`` and ``identifiable`` (False when the factors are collinear,
        e.g. all N equal: lstsq then returns the minimum-norm solution).

    Raises:
        ConfigError: a column is missing, or fewer usable rows than the 4 coefficients.

    Example:
        >>> t = pd.DataFrame({"gap": [0, 1, 0, 0, 2], "width": [0, 0, 1, 0, 1],
        ...                   "N": [1, 1, 1, np.e, np.e], "T_FB": np.exp([1, 3, 0, 0.5, 3.5])})
        >>> {k: round(v, 6) for k, v in fit_log_T(t)["coefficients"].items()}
        {'gap': 2.0, 'width': -1.0, 'log_N': -0.5, 'intercept': 1.0}
    """
    missing = [c for c in ("gap", "width", "N", target_col) if c not in table.columns]
    if missing:
        raise ConfigError(f"regression table lacks column(s) {missing}; it needs gap, width, N "
                          f"(from the domain analysis) and {target_col!r} (transferability)")
    cols = table[["gap", "width", "N", target_col]].astype(float)
    ok = (np.isfinite(cols).all(axis=1) & (cols["N"] > 0) & (cols[target_col] > 0)).to_numpy()
    used = cols[ok]
    if len(used) < len(COEFFICIENTS):
        raise ConfigError(
            f"fitting log {target_col} needs at least {len(COEFFICIENTS)} target tasks with "
            f"positive finite {target_col} and N, got {len(used)} (of {len(table)} rows); add "
            "target sets or drop factors")
    x = np.column_stack([used["gap"], used["width"], np.log(used["N"])])
    if standardize:
        sd = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    design = np.column_stack([x, np.ones(len(x))])
    y = np.log(used[target_col].to_numpy())
    beta, _, rank, _ = np.linalg.lstsq(design, y, rcond=None)
    fitted = design @ beta
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fitted) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {"target": target_col, "coefficients": dict(zip(COEFFICIENTS, map(float, beta))),
            "r2": r2, "fitted": fitted, "measured": y, "rows": list(used.index),
            "dropped": list(cols.index[~ok]), "n": int(len(used)), "rank": int(rank),
            "identifiable": int(rank) == len(COEFFICIENTS), "standardized": standardize}


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean()
    var = float(dx @ dx)
    return float(dx @ (y - y.mean()) / var) if var > 0 else float("nan")


def gap_check(rows: pd.DataFrame, target_col: str = "T_FB", *, n_boot: int = 2000,
              seed: int = 0) -> dict:
    """Claim 002.gap: the slope of ``log T`` on the domain gap is below 0.

    Rows with finite positive T and finite gap count; the unit is the target data set (the
    part of ``target`` before ``@``, so sweep variants of one set are resampled together).
    Returns ``verdict``, ``why``, ``test`` and ``estimate`` (an :class:`Interval` as a dict).

    Example:
        >>> t = pd.DataFrame({"target": list("abcdef"), "gap": [0.5, 1, 2, 3, 4, 6],
        ...                   "T_FB": np.exp([3.0, 2.9, 2.1, 1.4, 1.1, 0.2])})
        >>> c = gap_check(t, n_boot=500); c["verdict"], round(c["estimate"]["value"], 3)
        ('agrees', -0.528)
    """
    names = (rows["target"] if "target" in rows.columns else pd.Series(rows.index, rows.index))
    cols = rows[["gap", target_col]].astype(float)
    ok = (np.isfinite(cols).all(axis=1) & (cols[target_col] > 0)).to_numpy()
    x, y = cols["gap"].to_numpy()[ok], np.log(cols[target_col].to_numpy()[ok])
    sets = np.array([str(n).split("@")[0] for n in names[ok]])
    test = (f"slope of log {target_col} on the domain gap (least squares), cluster bootstrap "
            "over target data sets")
    n_sets = len(set(sets.tolist()))
    few = too_few(n_sets, MIN_TASKS, "target data sets")
    if few:
        iv = Interval(_slope(x, y) if len(x) else float("nan"), float("nan"), float("nan"),
                      "target data set", n_sets)
        return {"verdict": Verdict.CANNOT_TELL.value, "why": few, "test": test,
                "estimate": iv.to_dict()}
    iv = cluster_statistic(lambda i: _slope(x[i], y[i]), sets, unit="target data set",
                           n_boot=n_boot, seed=seed)
    verdict, why = verdict_of(iv, "<")
    return {"verdict": verdict.value, "test": test, "estimate": iv.to_dict(),
            "why": f"slope {iv.value:+.3g} per unit of gap; {why} (each target: one fine-tune "
                   "and one scratch run)"}


def fit_factors(rows: pd.DataFrame, *, standardize: bool = False) -> AnalysisResult:
    """Fit eq. 3 for ``T_FB`` and, when the column is there, ``T_SB``.

    ``rows``: one row per target task with ``gap``, ``width``, ``N``, ``T_FB`` [, ``T_SB``]
    and optionally a ``target`` name.
    """
    variants = [c for c in ("T_FB", "T_SB") if c in rows.columns]
    if not variants:
        raise ConfigError("regression needs a T_FB (and optionally T_SB) column")
    fits = [fit_log_T(rows, v, standardize=standardize) for v in variants]
    names = rows["target"] if "target" in rows.columns else pd.Series(rows.index, rows.index)
    coef, points, summary, notes = [], [], {}, []
    for f in fits:
        coef.append({"variant": f["target"], **f["coefficients"], "r2": f["r2"], "n": f["n"],
                     "rank": f["rank"], "identifiable": f["identifiable"]})
        summary[f["target"]] = {"coefficients": f["coefficients"], "r2": f["r2"], "n": f["n"],
                                "identifiable": f["identifiable"]}
        for label, meas, fit in zip(f["rows"], f["measured"], f["fitted"]):
            points.append({"variant": f["target"], "target": names[label],
                           "log T measured": meas, "log T fitted": fit})
        if f["dropped"]:
            notes.append(f"{f['target']}: rows {f['dropped']} left out (non-finite or T <= 0).")
        if not f["identifiable"]:
            notes.append(f"{f['target']}: factors are collinear (rank {f['rank']} < 4); the "
                         "coefficients are one of many exact solutions.")
    if "T_FB" in rows.columns and "gap" in rows.columns:
        summary["gap_claim"] = gap_check(rows)
    result = AnalysisResult("transferability_factors", summary,
                            {"coefficients": pd.DataFrame(coef), "fitted": pd.DataFrame(points)},
                            notes=notes + ["log is natural; coefficients are in the units of the "
                                           "factors" + (" (z-scored)." if standardize else ".")])
    result.figures["fitted_vs_measured"] = _figure(fits, names)
    return result


def _figure(fits, names):
    from transferscope.analyses._figures import subplots

    fig, axes = subplots(1, len(fits), figsize=(3.6 * len(fits), 3.4), squeeze=False)
    for ax, f in zip(axes.flat, fits):
        ax.scatter(f["fitted"], f["measured"], s=18)
        for label, x, y in zip(f["rows"], f["fitted"], f["measured"]):
            ax.annotate(str(names[label]), (x, y), fontsize=6)
        lo = min(f["fitted"].min(), f["measured"].min())
        hi = max(f["fitted"].max(), f["measured"].max())
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(f"fitted log {f['target']}")
        ax.set_ylabel(f"measured log {f['target']}")
        ax.set_title(f"r^2 = {f['r2']:.2f} (n = {f['n']})", fontsize=9)
    fig.tight_layout()
    return fig


def finding(result: AnalysisResult) -> Finding | None:
    """Fit quality and coefficients of eq. 3 per variant, and the verdict on the gap claim."""
    s = {k: v for k, v in result.summary.items() if k in ("T_FB", "T_SB")}
    if not s:
        return None
    clauses = tuple(f"{k}: R^2 {fmt(v['r2'])} over {v['n']} targets ("
                    + ", ".join(f"{c} {fmt(b)}" for c, b in v["coefficients"].items())
                    + ")" + ("" if v["identifiable"] else ", not identifiable")
                    for k, v in s.items())
    g = result.summary.get("gap_claim")
    checks, caveat = (), ""
    if g:
        iv = Interval(**g["estimate"])
        checks = (ClaimCheck("002.gap", Verdict(g["verdict"]), g["why"], iv, g["test"]),)
        caveat = g["why"] if g["why"].startswith("too few") else ""
    return Finding("Transferability factors", "(eq. 3, log T on gap, width and log N)",
                   clauses=clauses, checks=checks, caveat=caveat,
                   numbers={k: v["r2"] for k, v in s.items()})


register_analysis("transferability_factors", title="Regression of log T on gap, width and log N",
                  paper="paper 002, eq. 3", section="transferability", order=3,
                  finding=finding, made_by="studies.transferability")

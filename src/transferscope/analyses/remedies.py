"""Remedy verdicts: standard fine-tuning vs each remedy over seeds (the result of
:mod:`transferscope.studies.remedies`, which trains and audits the runs).

A remedy counts if its composite accuracy over biased backgrounds (paper 000) rises, on
average over seeds, by more than the seed-to-seed spread of that rise, while clean accuracy
falls by at most one point.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, register_analysis

__all__ = ["finding", "METRICS", "remedies_result", "STANDARD", "summarise"]

STANDARD = "standard"
METRICS = {"clean accuracy": "clean", "composite accuracy (biased against)": "against",
           "composite accuracy (neutral)": "neutral", "strongly biased classes": "biased",
           "mean distraction": "distraction", "training seconds": "cost"}


def summarise(per_run: pd.DataFrame, max_clean_drop: float = 0.01) -> tuple[pd.DataFrame, dict]:
    """Mean ± std per variant and the verdict, on differences paired by seed (a remedy and the
    standard fine-tune of one seed share the head's initialisation and the batch order).

    A remedy counts if its composite accuracy over biased backgrounds rises, on average over
    seeds, by more than the seed-to-seed spread (std) of that rise, while mean clean accuracy
    falls by at most ``max_clean_drop``.
    """
    agg = per_run.groupby("variant", sort=False)[list(METRICS.values())].agg(["mean", "std"])
    std_runs = per_run[per_run["variant"] == STANDARD].set_index("seed")
    rows, verdicts = [], {}
    for variant in agg.index:
        row = {"variant": variant, "seeds": int((per_run["variant"] == variant).sum())}
        for label, col in METRICS.items():
            m, s = agg.loc[variant, (col, "mean")], agg.loc[variant, (col, "std")]
            row[label] = f"{m:.3f} ± {0 if np.isnan(s) else s:.3f}" if col != "cost" else \
                f"{m:.0f} ± {0 if np.isnan(s) else s:.0f}"
        mine = per_run[per_run["variant"] == variant].set_index("seed")
        seeds = mine.index.intersection(std_runs.index)
        if variant != STANDARD and len(seeds):
            diff = {col: mine.loc[seeds, col].astype(float) - std_runs.loc[seeds, col].astype(float)
                    for col in ("clean", "against", "biased", "distraction")}
            d_clean, d_against = float(diff["clean"].mean()), float(diff["against"].mean())
            spread = float(diff["against"].std()) if len(seeds) > 1 else float("nan")
            lowers = bool(len(seeds) > 1 and d_against > max(spread, 0.0))
            keeps = bool(d_clean >= -max_clean_drop)
            row["Δ clean"] = f"{d_clean:+.3f}"
            row["Δ against"] = f"{d_against:+.3f} ± {0 if np.isnan(spread) else spread:.3f}"
            row["Δ strongly biased"] = f"{diff['biased'].mean():+.1f}"
            row["Δ distraction"] = f"{diff['distraction'].mean():+.3f}"
            row["counts"] = "yes" if lowers and keeps else "no"
            verdicts[variant] = {"lowers_interference": lowers, "keeps_clean_accuracy": keeps,
                                 "delta_clean": d_clean, "delta_against": d_against,
                                 "delta_against_std": spread, "paired_seeds": len(seeds),
                                 "counts": lowers and keeps}
        rows.append(row)
    return pd.DataFrame(rows), verdicts


def remedies_result(per_run: pd.DataFrame, settings: dict) -> AnalysisResult:
    """The ``remedies`` result: summary table, verdicts, per-run rows and the figure.

    ``per_run``: one row per trained run with columns ``run, variant, seed`` and the
    :data:`METRICS` columns.
    """
    table, verdicts = summarise(per_run)
    result = AnalysisResult("remedies", {"settings": settings, "verdicts": verdicts},
                            {"summary": table, "per_run": per_run})
    result.notes.append(
        "Mean ± std over seeds. 'against' = accuracy on composites whose background class "
        "is biased toward another target class; biased = source classes with max B >= 0.8; "
        "training seconds include, for pruning, the standard fine-tune it starts from. Δ = "
        "remedy − standard of the same seed, mean (± std) over seeds. A remedy counts if "
        "'against' rises by more than the std of that rise and clean accuracy falls by at "
        "most 1 point. Evaluation uses held-out source classes and the "
        "validation split only.")
    result.figures["against"] = _figure(per_run)
    return result


def _figure(per_run: pd.DataFrame):
    from transferscope.analyses._figures import subplots

    fig, axes = subplots(1, 3, figsize=(12, 3.4))
    order = list(dict.fromkeys(per_run["variant"]))
    for ax, (col, label) in zip(axes, [("clean", "clean accuracy"),
                                       ("against", "composites, biased backgrounds"),
                                       ("distraction", "mean Grad-CAM distraction")]):
        g = per_run.groupby("variant")[col]
        ax.bar(range(len(order)), [g.mean()[v] for v in order],
               yerr=[0 if np.isnan(g.std()[v]) else g.std()[v] for v in order], capsize=3)
        for i, v in enumerate(order):
            ys = per_run.loc[per_run["variant"] == v, col]
            ax.scatter([i] * len(ys), ys, color="k", s=8, zorder=3)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return fig


def finding(result: AnalysisResult) -> Finding | None:
    """The verdict of every remedy against standard fine-tuning of the same seed."""
    v = result.summary.get("verdicts", {})

    def spread(r):
        sd = r.get("delta_against_std")
        return "" if sd is None or sd != sd else f" ± {100 * sd:.1f}"

    def verdict(r):
        sd = r.get("delta_against_std")
        worse = sd is not None and sd == sd and r["delta_against"] < -sd
        return "counts" if r["counts"] else "lowers interference but costs clean " \
            "accuracy" if r.get("lowers_interference") else "raises interference" \
            if worse else "does not count"

    parts = [f"{html.escape(k)} {verdict(r)} "
             f"(against {100 * r['delta_against']:+.1f}{spread(r)} pts, clean "
             f"{100 * r['delta_clean']:+.1f} pts)" for k, r in v.items()]
    if not parts:
        return None
    return Finding.from_html("<b>Remedies</b> vs standard fine-tuning of the same seed (composite "
                   "accuracy over biased backgrounds; counts if its rise exceeds the "
                   "seed-to-seed spread of that rise and clean accuracy drops at most 1 "
                   "point): " + "; ".join(parts) + ".", {k: r["counts"] for k, r in v.items()})


register_analysis("remedies", title="Remedies for lingering memories vs standard fine-tuning",
                  paper="paper 000 and 001 metrics; the remedies go beyond the papers",
                  section="remedies",
                  finding=finding, made_by="studies.remedies")

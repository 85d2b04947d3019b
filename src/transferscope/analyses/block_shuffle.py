"""Block-shuffled inputs: P-T vs RI-T (paper 003, section 3.1, Fig. 3).

The runs are trained by :mod:`transferscope.studies.training_runs`; this module turns their
metrics into the result: final accuracy and optimisation speed (mean training accuracy over
the epochs) per block size, and the relative accuracy drop of RI-T against P-T.
"""

from __future__ import annotations

import pandas as pd

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, fmt, register_analysis

__all__ = ["block_shuffle_result", "finding", "optimisation_speed"]


def optimisation_speed(metrics: list[dict]) -> float:
    """Mean training accuracy over all epochs (paper 003, Fig. 3 right)."""
    return sum(m["train_acc"] for m in metrics) / len(metrics)


def block_shuffle_result(rows: list[dict], setting: str) -> AnalysisResult:
    """The ``block_shuffle`` result from one row per block size (``block size``,
    ``accuracy P-T``, ``accuracy RI-T``, ``relative drop %``, ``speed P-T``, ``speed RI-T``)."""
    table = pd.DataFrame(rows)
    result = AnalysisResult("block_shuffle", {r["block size"]: r for r in rows},
                            {"accuracy": table}, notes=[
        f"{setting}; one fixed block permutation per block size (seeded), applied to training "
        "and validation images; speed = mean training accuracy over the epochs."])
    result.figures["accuracy"] = _bars(table)
    return result


def _bars(table: pd.DataFrame):
    from transferscope.analyses._figures import subplots

    fig, axes = subplots(1, 2, figsize=(9, 3.2))
    x = range(len(table))
    for ax, (a, b, title) in zip(axes, (("accuracy P-T", "accuracy RI-T", "final accuracy"),
                                        ("speed P-T", "speed RI-T", "optimisation speed"))):
        ax.bar([i - 0.2 for i in x], table[a], width=0.4, alpha=0.5, label="P-T")
        ax.bar([i + 0.2 for i in x], table[b], width=0.4, label="RI-T")
        ax.set_xticks(list(x))
        ax.set_xticklabels(table["block size"])
        ax.set_xlabel("block size")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def finding(result: AnalysisResult) -> Finding | None:
    """P-T and RI-T accuracy per block size (one run each: about these runs)."""
    s = result.summary
    if not s:
        return None
    parts = tuple(f"block {b}: P-T {fmt(r['accuracy P-T'])}, RI-T {fmt(r['accuracy RI-T'])}"
                  for b, r in s.items())
    return Finding("Block shuffling", "(paper 003: the P-T advantage shrinks as blocks get "
                   "smaller)", clauses=parts,
                   caveat="too few runs for an interval (one P-T and one RI-T run per block "
                   "size); the "
                   "differences are about these runs",
                   next_step="train more seeds per block size to tell run-to-run variation "
                   "from the effect of the block size",
                   numbers={str(b): r["relative drop %"] for b, r in s.items()})


register_analysis("block_shuffle", title="Block-shuffled inputs: P-T vs RI-T",
                  paper="paper 003, section 3.1, Fig. 3", section="what_transferred", order=1,
                  finding=finding, made_by="studies.training_runs")

"""Fine-tuning from pre-training checkpoints (paper 003, section 3.5, Fig. 7).

The runs are trained by :mod:`transferscope.studies.training_runs`; the result holds, per
pre-training epoch, the pre-training validation accuracy, the final accuracy of the fine-tune
started there and its optimisation speed.
"""

from __future__ import annotations

import pandas as pd

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import Finding, fmt, register_analysis

__all__ = ["checkpoints_result", "finding"]


def checkpoints_result(rows: list[dict], setting: str) -> AnalysisResult:
    """The ``pretraining_checkpoints`` result from one row per checkpoint (``pre-training
    epoch``, ``pre-training val accuracy``, ``final accuracy``, ``optimisation speed``)."""
    table = pd.DataFrame(rows)
    return AnalysisResult("pretraining_checkpoints", {str(r["pre-training epoch"]): r
                                                      for r in rows}, {"checkpoints": table},
                          notes=[f"{setting}; epoch 0 = its random init."])


def finding(result: AnalysisResult) -> Finding | None:
    """Final accuracy of the fine-tune from each checkpoint (one run each)."""
    s = result.summary
    if not s:
        return None
    parts = tuple(f"epoch {e}: {fmt(r['final accuracy'])}" for e, r in s.items())
    return Finding("Pre-training checkpoints", "(final accuracy of the fine-tune started from "
                   "each; paper 003: later checkpoints help less and less)", clauses=parts,
                   caveat="too few runs for an interval (one fine-tune per checkpoint); the "
                   "differences are "
                   "about these runs",
                   numbers={e: r["final accuracy"] for e, r in s.items()})


register_analysis("pretraining_checkpoints", title="Fine-tuning from pre-training checkpoints",
                  paper="paper 003, section 3.5, Fig. 7", section="what_transferred", order=9,
                  finding=finding, made_by="studies.training_runs")

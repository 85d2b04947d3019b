"""Inference-time interference detector (paper 001, eq. 5).

``flag(x)`` is true when M^st gives any lingering class in L a probability above ``p_lo``:
the input shows a source-only feature the fine-tuned model still reacts to, so M^t's answer
may be distracted. :func:`evaluate` measures how well the flag predicts M^t's mistakes.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd
import torch
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, fmt, register_analysis
from transferscope.analyses._stats import auroc
from transferscope.analyses.composites import CompositeOptions
from transferscope.analyses.context import AuditContext
from transferscope.analyses.lingering_features import (class_mean_prob, lingering, source_only,
                                                       source_votes)
from transferscope.models.base import TransferModel


@dataclass
class InterferenceDetector:
    """Eq. 5 guard around M^st = B(M^t) + H(M^s).

    Args:
        m_st: the composed model (``AuditContext.m_st(name)``).
        classes: indices of the lingering classes L.
        p_lo: probability threshold.
    """

    m_st: TransferModel
    classes: torch.Tensor
    p_lo: float

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, S)`` M^st logits -> ``(N,)`` max probability over L (0 if L is empty)."""
        if len(self.classes) == 0:
            return torch.zeros(len(logits))
        return logits.softmax(1)[:, self.classes].max(1).values

    @torch.inference_mode()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` preprocessed images -> ``(N,)`` interference scores."""
        self.m_st.eval()
        return self.score_logits(self.m_st(x))

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` booleans: eq. 5, score > p_lo."""
        return self.score(x) > self.p_lo


def build(ctx: AuditContext, name: str, k: int = 5, v_lo: int = 0,
          p_lo: float | None = None) -> InterferenceDetector:
    """Detector for target model ``name`` with L found as in :mod:`.lingering_features`."""
    p_lo = 10.0 / ctx.source.num_classes if p_lo is None else p_lo
    only = source_only(source_votes(ctx.predict(ctx.source_for(name), ctx.target_data).logits,
                                    k), v_lo)
    m_st = ctx.m_st(name)
    probs, labels = [], []
    for data in ctx.source_data.values():
        pred = ctx.predict(m_st, data)
        probs.append(pred.probs)
        labels.append(pred.labels)
    mask = lingering(class_mean_prob(torch.cat(probs), torch.cat(labels)), only, p_lo)
    return InterferenceDetector(m_st, torch.nonzero(mask).flatten(), p_lo)


def evaluate_on(detector: InterferenceDetector, ctx: AuditContext, name: str, data,
                label: str) -> dict:
    """AUROC of the score for M^t's mistakes, and precision/recall of the flag, on ``data``."""
    wrong = (ctx.predict(ctx.targets[name], data).preds != torch.as_tensor(data.targets)).numpy()
    scores = detector.score_logits(ctx.predict(detector.m_st, data).logits).numpy()
    flags = scores > detector.p_lo
    tp = int((flags & wrong).sum())
    return {"data": label, "images": len(wrong), "mistakes": int(wrong.sum()),
            "flagged": int(flags.sum()), "auroc": auroc(scores, wrong),
            "precision": tp / flags.sum() if flags.sum() else float("nan"),
            "recall": tp / wrong.sum() if wrong.sum() else float("nan"),
            "error rate flagged": float(wrong[flags].mean()) if flags.any() else float("nan"),
            "error rate unflagged": float(wrong[~flags].mean()) if (~flags).any() else
            float("nan")}


def run(ctx: AuditContext, extra_sets: dict | None = None, composites: dict | None = None,
        **params) -> AnalysisResult:
    """Evaluate the detector of every transferred model on the clean target data (and on
    ``extra_sets``; ``composites``: options of the shared composite plan, whose composites
    are evaluated too)."""
    if composites is not None:
        from transferscope.analyses.composites import plan

        extra_sets = {"composites": plan(ctx, **composites).composites, **(extra_sets or {})}
    rows, summary = [], {}
    for name in ctx.transferred():
        det = build(ctx, name, **params)
        sets = {"target (clean)": ctx.target_data, **(extra_sets or {})}
        for label, data in sets.items():
            row = {"model": name, "lingering classes": len(det.classes),
                   **evaluate_on(det, ctx, name, data, label)}
            rows.append(row)
        summary[name] = {"lingering_classes": len(det.classes), "p_lo": det.p_lo,
                         "by_data": [r for r in rows if r["model"] == name]}
    return AnalysisResult("interference_detector", summary, {"evaluation": pd.DataFrame(rows)},
                          notes=["Positives are M^t's wrong predictions; the score is M^st's "
                                 "largest probability over the lingering classes L."])


class DetectorOptions(AnalysisOptions):
    k: int = Field(5, ge=1, description="top-k votes defining source-only classes")
    v_lo: int = Field(0, ge=0, description="vote threshold of source-only classes")
    p_lo: float | None = Field(None, ge=0, le=1, description="lingering threshold (default "
                               "10 / number of source classes)")
    composites: CompositeOptions | None = Field(None, description="also evaluate on the "
                                                "composites of this plan")


def finding(result: AnalysisResult) -> Finding | None:
    """AUROC and flagged images of every detector with lingering classes."""
    e = html.escape
    rows = [(k, r) for k, v in result.summary.items() for r in v["by_data"]
            if v["lingering_classes"]]
    if not rows:
        if not result.summary:
            return None
        return Finding("<b>Interference detector</b> (eq. 5): no lingering classes, so it flags "
                       "nothing - " + "; ".join(f"{e(k)} 0 lingering classes"
                                                for k in result.summary) + ".",
                       {k: 0 for k in result.summary})
    parts = [f"{e(k)} on {e(r['data'])}: AUROC {fmt(r['auroc'])}, {r['flagged']}/"
             f"{r['images']} flagged" for k, r in rows]
    return Finding("<b>Interference detector</b> (eq. 5) predicting the model's mistakes: "
                   + "; ".join(parts) + ".",
                   {f"{k} / {r['data']}": r["auroc"] for k, r in rows})


register_analysis("interference_detector", title="Interference detector", paper="paper 001, "
                  "eq. 5", section="memory", options=DetectorOptions, order=8, run=run,
                  finding=finding)

__all__ = ["InterferenceDetector", "build", "evaluate_on", "run"]

"""Inference-time interference detector (paper 001, eq. 5).

``flag(x)`` is true when M^st gives any lingering class in L a probability above ``p_lo``:
the input shows a source-only feature the fine-tuned model still reacts to, so M^t's answer
may be distracted. :func:`evaluate` measures how well the flag predicts M^t's mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._stats import auroc
from transferscope.analyses.context import AuditContext
from transferscope.analyses.lingering import class_mean_prob, lingering, source_only, source_votes
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
    """Detector for target model ``name`` with L found as in :mod:`.lingering`."""
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


def run(ctx: AuditContext, extra_sets: dict | None = None, **params) -> AnalysisResult:
    """Evaluate the detector of every transferred model on the clean target data (and on
    ``extra_sets``, e.g. composites)."""
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


__all__ = ["InterferenceDetector", "build", "evaluate_on", "run"]

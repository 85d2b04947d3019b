"""Pruning (paper 001, appendix B): remove the penultimate channels most selective for the
lingering classes L of an already fine-tuned model, then fine-tune briefly.

Start the run from the fine-tuned model (``init=<its model.safetensors>``, a short recipe).
At the start, on source images of the training half and the target training images:
L = {c in F : p_c(M^st(x_c)) > p_lo} (eq. 3), and per channel j the selectivity
``(mean_{x in L} f_j(x) - mean_{x in D^t} f_j(x)) / std_j``; the top ``fraction`` of channels
are zeroed for good (:meth:`TransferModel.prune_features`, kept through the fine-tune).
"""

from __future__ import annotations

import torch

from transferscope.data.transforms import eval_transform
from transferscope.data.folder import source_images
from transferscope.engine.modes import eval_mode
from transferscope.remedies._base import Remedy

__all__ = ["Pruning", "selectivity"]


def _features(model, data, batch_size: int = 64) -> torch.Tensor:
    out = []
    with eval_mode(model), torch.inference_mode():
        for i in range(0, len(data), batch_size):
            x = torch.stack([data[j][0] for j in range(i, min(len(data), i + batch_size))])
            out.append(model.forward_features(x))
    return torch.cat(out)


def selectivity(f_lingering: torch.Tensor, f_target: torch.Tensor) -> torch.Tensor:
    """``(N1, D), (N2, D) -> (D,)``: difference of means over the pooled standard deviation."""
    std = torch.cat([f_lingering, f_target]).std(0)
    return (f_lingering.mean(0) - f_target.mean(0)) / (std + 1e-8)


class Pruning(Remedy):
    """Zero the ``fraction`` of penultimate channels most selective for L."""

    name = "pruning"

    def __init__(self, fraction: float = 0.05, p_lo: float | None = None, **kw):
        super().__init__(fraction=float(fraction), p_lo=p_lo, **kw)

    def setup(self, model, train_set, image_size, fresh):
        if not fresh:
            return
        m_s = self.source_model(model.arch)
        only = set(self.source_only(model, train_set, image_size))
        tf = eval_transform(model.norm, image_size)
        src = source_images(self.source, data_root=self.data_root)
        allowed = set(self.allowed_classes(m_s.num_classes))
        ids = [i for i, s in enumerate(src.samples) if s.label in only and s.label in allowed]
        src = src.subset(ids).with_transform(tf)
        f_src = _features(model, src)
        probs = m_s.head(f_src).softmax(1)
        labels = src.targets
        p_lo = 10.0 / m_s.num_classes if self.p_lo is None else self.p_lo
        lingering = probs[torch.arange(len(labels)), labels] > p_lo
        f_tgt = _features(model, train_set.with_transform(tf))
        k = round(self.fraction * model.num_features)
        self.report.update({"lingering_images": int(lingering.sum()), "pruned": 0})
        if lingering.sum() == 0 or k == 0:
            return
        sel = selectivity(f_src[lingering], f_tgt)
        channels = torch.argsort(sel, descending=True)[:k]
        model.prune_features(channels)
        self.report["pruned"] = int(k)

"""What the monitor measures at each evaluation, registered like the analyses and computed with
the analyses' own pure functions (so a metric equals the full audit's number on the same images
at the same settings).

Every metric reads one :class:`ProbeState` and returns flat scalar ``values`` (logged as
``"<metric>/<key>"``) and optional :class:`~transferscope.stats.Interval` s. The state shares
forward passes between metrics: one pass of the current model over the target probe gives the
logits (accuracy) and the layer-group activations (CKA); the pretrained model's activations are
computed once for the whole run.

Built-in metrics (keys of :data:`MONITOR_METRICS`):

- ``target_accuracy``: accuracy on the target probe (interval over target images).
- ``retained_knowledge``: paper 000 Table 1 on the source probe - the fine-tuned backbone with
  the source head kept aside at the start (M^st): classes recognised at recall >= 50 %
  (:func:`~transferscope.analyses.retained_knowledge.recall_bins`) and the mean per-class
  recall (interval over source classes).
- ``distance_to_pretrained``: paper 003 Table 8 - l2 distance of each layer group to the
  pretrained weights (:func:`~transferscope.analyses.distances.layer_distances`; the head is
  left out when its shape changed).
- ``cka_to_pretrained``: paper 003 Table 1 - linear CKA of each layer group's output (spatial
  mean per channel, as the ``cka`` analysis' default) between the current and the pretrained
  model on the target probe (:func:`~transferscope.analyses.cka.linear_cka`).
- ``distraction`` (not in the defaults: Grad-CAM needs a backward pass per composite): paper
  001 eq. 4 (:func:`~transferscope.analyses.distraction.distraction`) on fixed composites -
  each source probe image with one seeded target overlay (paper 001's 40 % side); the source
  model's maps are computed once. The full analysis draws its backgrounds from the lingering
  classes of the final model instead, so its number is not the monitor's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from transferscope.analyses.cka import linear_cka
from transferscope.analyses.distances import layer_distances
from transferscope.analyses.retained_knowledge import per_class_recall, recall_bins
from transferscope.callbacks.probe import DecodedProbe
from transferscope.engine.inference import capture, default_transform, forward_batch
from transferscope.engine.modes import eval_mode
from transferscope.errors import ConfigError
from transferscope.models.base import TransferModel, compose
from transferscope.stats import Interval, cluster_mean

__all__ = ["check_metrics", "cka_to_pretrained", "distance_to_pretrained", "distraction_metric",
           "fixed_composites", "MetricValues", "MONITOR_METRICS", "MonitorMetric", "ProbeState",
           "register_metric", "retained_knowledge", "target_accuracy"]


@dataclass
class MetricValues:
    """One metric's output at one evaluation: ``values`` (key -> float), ``intervals``
    (key -> Interval) and ``skipped`` (why it could not be computed, else empty)."""

    values: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    skipped: str = ""


@dataclass(frozen=True)
class MonitorMetric:
    name: str
    description: str
    compute: Callable[["ProbeState"], MetricValues]


MONITOR_METRICS: dict[str, MonitorMetric] = {}


def register_metric(name: str, description: str):
    """Register ``compute(state) -> MetricValues`` as monitor metric ``name`` (decorator)."""
    def deco(fn):
        MONITOR_METRICS[name] = MonitorMetric(name, description, fn)
        return fn
    return deco


def check_metrics(names) -> list[str]:
    """``names`` if every one is registered, else a one-line ConfigError with did-you-mean."""
    from transferscope.errors import did_you_mean

    for n in names:
        if n not in MONITOR_METRICS:
            raise ConfigError(f"unknown monitor metric {n!r}{did_you_mean(n, MONITOR_METRICS)}; "
                              f"known: {', '.join(MONITOR_METRICS)}")
    return list(names)


@dataclass
class ProbeState:
    """Inputs of one evaluation; forward passes are shared between metrics through ``memo``
    (this evaluation) and ``fixed`` (the whole run: the pretrained model's passes).

    Attributes:
        model: the model being trained (a TransferModel; see ``callbacks.view``).
        pretrained: the model at the start, with its source head (kept aside, frozen).
        target, source: the decoded probe images (``source`` None: no source images).
        image_size, batch_size, device: the forward passes' settings.
    """

    model: TransferModel
    pretrained: TransferModel
    target: DecodedProbe
    source: DecodedProbe | None
    image_size: int
    batch_size: int
    device: torch.device
    composites: int = 24
    seed: int = 0
    fixed: dict = field(default_factory=dict)
    memo: dict = field(default_factory=dict)

    def _pass(self, model: TransferModel, probe: DecodedProbe, layers: bool) -> dict:
        tf = default_transform(model, probe.data, model.input_size(self.image_size))
        names = [g.name for g in model.layer_groups(include_classifier=False)] if layers else []
        logits, labels = [], []
        with eval_mode(model), capture(model, model.resolve_layers(names), "avg") as acts:
            for x, y in probe.batches(tf, self.batch_size):
                logits.append(forward_batch(model, x.to(self.device)).cpu())
                labels.append(y)
        return {"logits": torch.cat(logits), "labels": torch.cat(labels),
                "layers": {k: torch.cat(v) for k, v in acts.items()}}

    def target_pass(self) -> dict:
        """Logits and layer-group activations of the current model on the target probe."""
        if "target" not in self.memo:
            self.memo["target"] = self._pass(self.model, self.target, layers=True)
        return self.memo["target"]

    def pretrained_target_pass(self) -> dict:
        """The same for the pretrained model (computed once per run)."""
        if "pretrained_target" not in self.fixed:
            self.fixed["pretrained_target"] = self._pass(self.pretrained, self.target, True)
        return self.fixed["pretrained_target"]

    def source_pass(self) -> dict:
        """Logits of M^st (current backbone + the source head kept aside) on the source probe."""
        if "source" not in self.memo:
            self.memo["source"] = self._pass(compose(self.model, self.pretrained),
                                             self.source, layers=False)
        return self.memo["source"]

    def same_backbone(self) -> str:
        """Why the current model cannot be compared with the pretrained one ('' if it can)."""
        if self.model.num_features != self.pretrained.num_features:
            return (f"the model's features ({self.model.num_features}) do not fit the source "
                    f"head ({self.pretrained.num_features}): another architecture")
        return ""


def _needs_source(state: ProbeState) -> str:
    """Why a metric on the source images cannot run ('' when it can)."""
    return "no source images" if state.source is None else state.same_backbone()


@register_metric("target_accuracy", "accuracy on the target probe images")
def target_accuracy(state: ProbeState) -> MetricValues:
    out = state.target_pass()
    correct = (out["logits"].argmax(1) == out["labels"]).double()
    iv = cluster_mean(correct.numpy(), unit="target image")
    return MetricValues({"accuracy": float(correct.mean())}, {"accuracy": iv})


@register_metric("retained_knowledge", "source classes the backbone still recognises with the "
                 "source head (M^st, paper 000 Table 1)")
def retained_knowledge(state: ProbeState) -> MetricValues:
    why = _needs_source(state)
    if why:
        return MetricValues(skipped=why)
    out = state.source_pass()
    rec = per_class_recall(out["logits"].argmax(1), out["labels"], state.pretrained.num_classes)
    bins = recall_bins(rec)
    present = rec[~rec.isnan()].double()
    iv = cluster_mean(present.numpy(), unit="source class")
    return MetricValues({"classes_recall_ge_50": float(sum(bins[1:])),
                         "classes": float(sum(bins)), "mean_recall": float(present.mean())},
                        {"mean_recall": iv})


@register_metric("distance_to_pretrained", "l2 distance of each layer group to the pretrained "
                 "weights (paper 003 Table 8)")
def distance_to_pretrained(state: ProbeState) -> MetricValues:
    why = state.same_backbone()
    if why:
        return MetricValues(skipped=why)
    if "pretrained_state" not in state.fixed:
        state.fixed["pretrained_state"] = {k: v.detach().cpu().clone() for k, v in
                                           state.pretrained.state_dict().items()}
    table = layer_distances(state.model.state_dict(), state.fixed["pretrained_state"],
                            state.model, labels=("model", "pretrained"), head_mismatch="skip")
    return MetricValues({row.layer: float(row.l2) for row in table.itertuples()
                         if not math.isnan(row.l2)})


@register_metric("cka_to_pretrained", "linear CKA of each layer group's output with the "
                 "pretrained model's, on the target probe (paper 003 Table 1)")
def cka_to_pretrained(state: ProbeState) -> MetricValues:
    why = state.same_backbone()
    if why:
        return MetricValues(skipped=why)
    cur, pre = state.target_pass()["layers"], state.pretrained_target_pass()["layers"]
    values = {k: linear_cka(cur[k], pre[k]) for k in cur if k in pre}
    finite = [v for v in values.values() if math.isfinite(v)]
    if finite:
        values["mean"] = sum(finite) / len(finite)
    return MetricValues(values)


def fixed_composites(source: DecodedProbe, target: DecodedProbe, n: int, size: int,
                     seed: int):
    """Up to ``n`` composites: the first ``n`` source probe images, each with one target probe
    image pasted (seeded draw, paper 001's overlay side)."""
    from transferscope.analyses.composites import STYLES
    from transferscope.data.composite import CompositeSet

    n_bg, n_t = min(n, len(source.data)), len(target.data)
    g = torch.Generator().manual_seed(seed)
    overlays = torch.cat([torch.randperm(n_t, generator=g)
                          for _ in range(-(-n_bg // n_t))]).tolist()
    return CompositeSet.paired(source.data, target.data,
                               [(i, overlays[i]) for i in range(n_bg)], size,
                               STYLES["paper001"], 1, seed)


def _cams(model: TransferModel, probe: DecodedProbe, targets, state: "ProbeState"):
    from transferscope.engine.attribution import gradcam_batch

    tf = default_transform(model, probe.data, model.input_size(state.image_size))
    x, _ = probe.tensors(tf)
    out = []
    for i in range(0, len(x), state.batch_size):
        t = None if targets is None else targets[i:i + state.batch_size].to(state.device)
        out.append(gradcam_batch(model, x[i:i + state.batch_size].to(state.device), t).cpu())
    return torch.cat(out)


@register_metric("distraction", "Grad-CAM distraction on fixed composites (paper 001 eq. 4); "
                 "not in the defaults")
def distraction_metric(state: ProbeState) -> MetricValues:
    from transferscope.analyses.distraction import distraction

    why = _needs_source(state)
    if why:
        return MetricValues(skipped=why)
    if "composites" not in state.fixed:
        comp = fixed_composites(state.source, state.target, state.composites,
                                state.image_size, state.seed)
        probe = DecodedProbe(comp)
        state.fixed["composites"] = probe
        state.fixed["source_cams"] = _cams(state.pretrained, probe, comp.background_labels,
                                           state)
    probe = state.fixed["composites"]
    comp = probe.data
    cam_t = _cams(state.model, probe, None, state)
    scores = distraction(cam_t, state.fixed["source_cams"], comp.boxes, comp.size)
    iv = cluster_mean(scores.double().numpy(), comp.items[:, 0].numpy(),
                      unit="background image")
    return MetricValues({"mean": iv.value, "scored": float(torch.isfinite(scores).sum())},
                        {"mean": iv})

"""Rank candidate source models for a target from one cached forward pass each, and check a
ranking against fine-tuned accuracy.

:func:`rank_candidates` runs each candidate once over the target's training split
(:func:`~transferscope.engine.predict` with ``with_features``: the penultimate features are the
content-keyed cache entry, so a rerun or an added candidate costs only the new forward passes;
candidates that preprocess alike share one decoding pass,
:func:`~transferscope.engine.loading.decode_once`),
scores it with every :mod:`~transferscope.ranking.scores` function and drops its features before
the next one (memory flat in the number of candidates). :func:`check_ranking` compares each
score with given fine-tuned accuracies: weighted Kendall tau (hyperbolic weights, as the
published model-selection tables) and Pearson r, each with a bootstrap interval over
candidates.

Example (skipped: needs the hymenoptera data set and a minute of CPU):

    >>> from transferscope.data import image_folder
    >>> from transferscope.models import create_model
    >>> table = rank_candidates(image_folder("hymenoptera", "train"), {
    ...     "lite0": lambda: create_model("efficientnet_lite0", init="imagenet"),
    ...     "lite0-random": lambda: create_model("efficientnet_lite0", init="random")},
    ...     image_size=128)  # doctest: +SKIP
    >>> table.loc["lite0", "logme"] > table.loc["lite0-random", "logme"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping, Union

import numpy as np
import pandas as pd
import torch

from transferscope.errors import DataError
from transferscope.models.base import TransferModel
from transferscope.ranking.scores import FEATURE_SCORES, HEAD_SCORES
from transferscope.stats import cluster_statistic, too_few

__all__ = ["MIN_CANDIDATES", "SCORES", "check_ranking", "rank_candidates",
           "source_head_reason"]

#: score columns, in table order
SCORES = ("logme", "leep", "nce", "hscore", "hscore_reg", "gbc", "knn")
#: below this many candidates a correlation over candidates cannot tell
MIN_CANDIDATES = 5

Candidate = Union[TransferModel, Callable[[], TransferModel]]


def source_head_reason(model: TransferModel) -> str | None:
    """Why ``model`` has no source head to score LEEP and NCE with, or None when it has one
    (pretrained weights with their classifier)."""
    init = str((model.builder or {}).get("init", ""))
    if init == "random":
        return "random weights: no trained source head"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def rank_candidates(target, candidates: Mapping[str, Candidate], *,
                    image_size: int | None = None, cache=None, batch_size: int | None = None,
                    num_workers: int | None = None, device: str = "auto",
                    source_heads: Mapping[str, bool] | None = None,
                    progress: bool | None = None, seed: int = 0,
                    on_error: Callable[[str, str], None] | None = None) -> pd.DataFrame:
    """Transferability scores of each candidate for ``target`` (an ImageSet: its training
    split), a row per candidate (index: its name), sorted by LogME, best first.

    Args:
        candidates: name -> a :class:`TransferModel`, or a function building one (built when
            its turn comes, dropped after it: memory holds one candidate at a time).
        image_size: input side (each candidate's ``input_size`` of it); default each model's
            own. Each candidate gets its own preprocessing (column ``preprocessing``).
        source_heads: name -> whether the candidate's head is its source head (default:
            :func:`source_head_reason`); without one, ``leep`` and ``nce`` are NaN and
            ``skipped`` says why.
        seed: the torch seed each builder runs under (random-weight candidates are the same
            models on every run, and their features come from the cache).
        on_error: called ``(name, one-line reason)`` for a candidate that cannot be built or
            run; its row has NaN scores and the reason in ``error``; the others are ranked.

    Columns: the scores (:data:`SCORES`, higher is better), ``width`` (feature dimension),
    ``n`` (images), ``classes``, ``arch``, ``init``, ``preprocessing``, ``forward_s`` (the
    forward pass, ~0 when cached), ``scores_s``, ``cached``, ``skipped``, ``error``.

    Raises:
        DataError: the target has fewer than two classes.
    """
    from transferscope.data.transforms import describe_transform
    from transferscope.engine.inference import default_transform, predict
    from transferscope.engine.loading import decode_once

    if target.num_classes < 2:
        raise DataError(f"{target.root}: {target.num_classes} class "
                        f"({', '.join(map(str, target.classes)) or 'none'}); ranking needs a "
                        "target with at least two classes")
    rows = []
    # candidates that preprocess alike read one decoding pass (held in memory when it fits)
    decoded = decode_once(target, num_workers=num_workers, progress=progress)
    for name, candidate in candidates.items():
        row: dict = {"candidate": name, **{s: math.nan for s in SCORES}, "skipped": "",
                     "error": ""}
        try:
            if callable(candidate) and not isinstance(candidate, TransferModel):
                with torch.random.fork_rng(devices=[]):  # random weights: the same each run
                    torch.manual_seed(seed)               # (so their features cache too)
                    model = candidate()
            else:
                model = candidate
            size = model.input_size(image_size) if image_size else None
            tf = default_transform(model, target, size)
            row.update(arch=model.arch, init=str((model.builder or {}).get("init", "")),
                       width=model.num_features, preprocessing=describe_transform(tf))
            t0 = time.perf_counter()
            pred = predict(model, decoded, image_size=size, transform=tf, cache=cache,
                           batch_size=batch_size,
                           num_workers=num_workers, device=device, progress=progress,
                           with_features=True, desc=f"rank: {name} on {target.root.name}")
            row.update(forward_s=time.perf_counter() - t0, cached=pred.from_cache)
        except Exception as exc:  # noqa: BLE001  one bad candidate must not stop the others
            row["error"] = _one_line(exc)
            if on_error:
                on_error(name, row["error"])
            rows.append(row)
            continue
        reason = (source_head_reason(model) if source_heads is None or name not in source_heads
                  else None if source_heads[name] else "no source head given")
        row.update(_score(pred.activations["features"], pred.logits, pred.labels, reason))
        row.update(n=len(pred.labels), classes=int(pred.labels.unique().numel()))
        del pred, model
        rows.append(row)
    table = pd.DataFrame(rows).set_index("candidate")
    cols = [*SCORES, "width", "n", "classes", "arch", "init", "preprocessing", "forward_s",
            "scores_s", "cached", "skipped", "error"]
    table = table.reindex(columns=cols)
    return table.sort_values("logme", ascending=False, na_position="last", kind="stable")


def _score(features, logits, labels, head_reason: str | None) -> dict:
    """Every score of one candidate; a score that cannot be computed is NaN, its reason in
    ``skipped``."""
    t0 = time.perf_counter()
    out, skipped = {}, []
    for name, fn in FEATURE_SCORES.items():
        try:
            out[name] = fn(features, labels)
        except ValueError as exc:
            out[name] = math.nan
            skipped.append(f"{name}: {exc}")
    for name, fn in HEAD_SCORES.items():
        if head_reason:
            out[name] = math.nan
            continue
        try:
            out[name] = fn(logits.double().softmax(1), labels)
        except ValueError as exc:
            out[name] = math.nan
            skipped.append(f"{name}: {exc}")
    if head_reason:
        skipped.insert(0, f"{', '.join(HEAD_SCORES)}: {head_reason}")
    return {**out, "skipped": "; ".join(skipped), "scores_s": time.perf_counter() - t0}


def check_ranking(table: pd.DataFrame, accuracy: Mapping[str, float], *,
                  correct: Mapping[str, np.ndarray] | None = None,
                  scores=SCORES, min_candidates: int = MIN_CANDIDATES, seed: int = 0,
                  n_boot: int = 2000) -> pd.DataFrame:
    """How well each score ranks the candidates by their fine-tuned ``accuracy`` (name ->
    accuracy): a row per score with the weighted Kendall tau (``scipy.stats.weightedtau``,
    hyperbolic weights, ranks by decreasing score) and Pearson r over the candidates that
    have both, each with a 95% bootstrap interval, ``n`` and a ``note`` ("too few candidates
    to tell ..." below ``min_candidates``). Candidates are taken in name order, so the
    intervals do not depend on the order ``accuracy`` lists them.

    The interval resamples the candidates; with ``correct`` (name -> ``(M,)`` bool, whether
    each of the M validation images all candidates were scored on is classified right) it
    also resamples those images (:func:`~transferscope.stats.crossed_statistic`), so it
    carries each accuracy's own noise - a few hundred images, or a short fine-tuning, move
    an accuracy by points. Without per-image results for every candidate, candidates only.
    Column ``resampled`` says which.

    Example:
        >>> t = pd.DataFrame({"logme": [0.9, 0.5, 0.1]}, index=["a", "b", "c"])
        >>> row = check_ranking(t, {"a": 0.95, "b": 0.8, "c": 0.6}, scores=["logme"]).iloc[0]
        >>> round(float(row.tau_w), 6), int(row.n), row.note
        (1.0, 3, 'too few candidates to tell (3; at least 5 needed)')
    """
    from scipy.stats import pearsonr, weightedtau

    from transferscope.stats import crossed_statistic

    def tau_of(x, y):
        return weightedtau(x, y).statistic if len(x) > 1 else math.nan

    def r_of(x, y):
        if len(x) < 3 or _flat(x) or _flat(y):
            return math.nan  # no spread (to rounding): r is undefined, not noise
        return pearsonr(x, y).statistic

    rows = []
    for score in scores:
        if score not in table:
            continue
        names = [c for c, a in sorted(accuracy.items()) if c in table.index
                 and np.isfinite(table.loc[c, score]) and np.isfinite(a)]
        x = np.array([float(table.loc[c, score]) for c in names])
        y = np.array([float(accuracy[c]) for c in names])
        per_image = _per_image(correct, names, y)
        if per_image is not None:
            acc = per_image.astype(float)  # (candidates, images)

            def crossed(stat, x=x, acc=acc):
                return crossed_statistic(lambda r, w: stat(x[r], acc[r] @ w / w.sum()),
                                         len(x), acc.shape[1], unit="candidate",
                                         cols="validation image", seed=seed, n_boot=n_boot)

            t_iv, r_iv = crossed(tau_of), crossed(r_of)
        else:
            t_iv = cluster_statistic(lambda i, x=x, y=y: tau_of(x[i], y[i]), len(x),
                                     unit="candidate", seed=seed, n_boot=n_boot)
            r_iv = cluster_statistic(lambda i, x=x, y=y: r_of(x[i], y[i]), len(x),
                                     unit="candidate", seed=seed, n_boot=n_boot)
        rows.append({"score": score, "n": len(x), "tau_w": t_iv.value, "tau_lo": t_iv.lo,
                     "tau_hi": t_iv.hi, "r": r_iv.value, "r_lo": r_iv.lo, "r_hi": r_iv.hi,
                     "note": too_few(len(x), min_candidates, "candidates") or "",
                     "resampled": ("candidates and validation images" if per_image is not None
                                   else "candidates"),
                     "tau_interval": t_iv.to_dict(), "r_interval": r_iv.to_dict()})
    return pd.DataFrame(rows)


def _per_image(correct: Mapping[str, np.ndarray] | None, names: list[str], accuracy):
    """``(candidates, M)`` per-image correctness when every candidate has it over the same M
    images and its mean is that candidate's accuracy, else None."""
    if correct is None or not names or any(c not in correct for c in names):
        return None
    rows = [np.asarray(correct[c], dtype=bool).ravel() for c in names]
    if len({r.size for r in rows}) != 1 or rows[0].size == 0:
        return None
    table = np.stack(rows)
    return table if np.allclose(table.mean(1), accuracy, atol=1e-6) else None


def _flat(v: np.ndarray, rtol: float = 1e-9) -> bool:
    """Whether ``v`` has no spread beyond rounding (a saturated score: 1.0 and
    1.00000000000002); Pearson r of it is undefined (scipy warns and returns noise)."""
    return float(np.ptp(v)) <= rtol * max(float(np.abs(v).max()), 1e-300)

"""Inference-time interference detector (paper 001, eq. 5).

``flag(x)`` is true when M^st gives any lingering class in L a probability above ``p_lo``:
the input shows a source-only feature the fine-tuned model still reacts to, so M^t's answer
may be distracted.

Protocol (held out):

* v(c) (eq. 1) counts the *training* split of the target data (the fine-tuning data, as in
  the paper), so F (eq. 2) and L (eq. 3) never see the images the detector is scored on;
  without a training split in the context the validation split is used and the result is
  marked ``held_out: false``.
* The detector is scored on held-out clean validation images (negatives) against composites
  that paste validation images on source backgrounds (positives): AUROC of the score with a
  seeded bootstrap 95 % interval over images, and the flag rates at ``p_lo``.
* Two settings: the paper's defaults (k = 5, v_lo = 0, p_lo = 10x chance = 0.01 for 1000
  classes) and a (p_lo, k) calibrated on a held-out half of the training split (v(c) on one
  half; clean images of the other half vs composites made from them; the setting with the
  largest true-minus-false flag rate wins, ties to the earlier grid entry).
* An empty L gives NaN scores and a ``reason`` (never a silent AUROC of 0.5); the summary
  says in words whether the detector (at the calibrated setting when there is one) separates
  clean images from composites (the lower end of the AUROC interval above 0.5) or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, register_analysis
from transferscope.analyses._detector_verdicts import (MAX_CLEAN_FLAG_RATE, detector_finding,
                                                      mistake_auroc, operating_point,
                                                      split_backgrounds, useful)
from transferscope.analyses._stats import auroc
from transferscope.stats import cluster_statistic
from transferscope.analyses.composites import CompositeOptions
from transferscope.analyses.context import AuditContext
from transferscope.analyses.lingering_features import (class_mean_prob, lingering, source_only,
                                                       source_votes)
from transferscope.models.base import TransferModel

PAPER_K, PAPER_V_LO = 5, 0
P_LO_FACTORS = (10.0, 1.0, 2.0, 5.0, 20.0, 50.0)  # calibration grid, x chance (1 / S); paper: 10
K_GRID = (5, 1, 3, 10)


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
        """``(N, S)`` M^st logits -> ``(N,)`` max probability over L (NaN if L is empty:
        there is nothing to detect)."""
        return interference_scores(logits, self.classes)

    @torch.inference_mode()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` preprocessed images -> ``(N,)`` interference scores."""
        self.m_st.eval()
        return self.score_logits(self.m_st(x))

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` booleans: eq. 5, score > p_lo (False where L is empty)."""
        return self.score(x) > self.p_lo


def interference_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``(N, S)`` logits -> ``(N,)`` max softmax probability over ``classes``; NaN if empty.

    Example:
        >>> interference_scores(torch.zeros(2, 4), torch.tensor([1, 3])).tolist()
        [0.25, 0.25]
        >>> interference_scores(torch.zeros(2, 4), torch.tensor([], dtype=torch.long)).isnan().all()
        tensor(True)
    """
    if len(classes) == 0:
        return torch.full((len(logits),), float("nan"))
    return logits.softmax(1)[:, classes].max(1).values


def lingering_set(votes_logits: torch.Tensor, st_probs: torch.Tensor, st_labels: torch.Tensor,
                  k: int, v_lo: int, p_lo: float) -> torch.Tensor:
    """L (eq. 1-3) as class indices: ``votes_logits (N, S)`` of M^s on the target training
    images, ``st_probs (M, S)`` / ``st_labels (M,)`` of M^st on labelled source images."""
    only = source_only(source_votes(votes_logits, k), v_lo)
    return torch.nonzero(lingering(class_mean_prob(st_probs, st_labels), only, p_lo)).flatten()


def separation(clean: np.ndarray, composites: np.ndarray, p_lo: float, *, seed: int = 0,
               n_boot: int = 1000, clusters=None) -> dict:
    """How well scores separate clean images (negatives) from composites (positives).

    Returns AUROC with its bootstrap interval (resampling clean images and composites
    separately; composites by ``clusters``, their background images, when given - many
    composites share one background and are not independent), the flag rates ``score > p_lo`` of both, their difference (Youden's J), the
    counts, and a ``reason`` when the scores are undefined (L empty).

    Example:
        >>> r = separation(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6, 0.7]), 0.4)
        >>> r["auroc"], r["flag_rate_composites"], r["flag_rate_clean"], r["separates"]
        (1.0, 1.0, 0.0, True)
    """
    clean, composites = np.asarray(clean, float), np.asarray(composites, float)
    out = {"n_clean": int(clean.size), "n_composites": int(composites.size), "p_lo": p_lo}
    if clean.size == 0 or composites.size == 0 or np.isnan(clean).all():
        out.update(auroc=float("nan"), auroc_ci95=[float("nan")] * 2, flag_rate_clean=float("nan"),
                   flag_rate_composites=float("nan"), youden_j=float("nan"), separates=False,
                   reason="no lingering class (L is empty) at this setting: nothing to detect"
                   if clean.size and np.isnan(clean).all() else "no images to score")
        return out
    scores = np.concatenate([clean, composites])
    pos = np.concatenate([np.zeros(clean.size, bool), np.ones(composites.size, bool)])
    a = auroc(scores, pos)
    units = np.concatenate([[f"img{i}" for i in range(clean.size)],
                            [f"bg{c}" for c in (np.arange(composites.size) if clusters is None
                                                 else np.asarray(clusters))]])
    iv = cluster_statistic(lambda i: auroc(scores[i], pos[i]), units, strata=pos,
                           n_boot=n_boot, seed=seed)
    lo, hi = iv.lo, iv.hi
    fc, fp = float((clean > p_lo).mean()), float((composites > p_lo).mean())
    out.update(auroc=a, auroc_ci95=[lo, hi], flag_rate_clean=fc, flag_rate_composites=fp,
               youden_j=fp - fc, separates=bool(lo > 0.5), reason="")
    return out


def verdict(sep: dict) -> str:
    """One plain sentence from :func:`separation`'s result."""
    if sep.get("reason"):
        return f"cannot be scored: {sep['reason']}"
    lo, hi = sep["auroc_ci95"]
    words = "separates" if sep["separates"] else "does not separate"
    return (f"{words} clean images from composites (AUROC {sep['auroc']:.2f}, 95 % CI "
            f"[{lo:.2f}, {hi:.2f}]; flags {100 * sep['flag_rate_composites']:.0f}% of "
            f"composites and {100 * sep['flag_rate_clean']:.0f}% of clean images)")


def build(ctx: AuditContext, name: str, k: int = PAPER_K, v_lo: int = PAPER_V_LO,
          p_lo: float | None = None, votes_data=None) -> InterferenceDetector:
    """Detector for target model ``name``: v(c) over ``votes_data`` (default: the training
    split ``ctx.target_train_data`` when present, else ``ctx.target_data``)."""
    p_lo = 10.0 / ctx.source.num_classes if p_lo is None else p_lo
    data = votes_data if votes_data is not None else _train_split(ctx)
    m_st = ctx.m_st(name)
    probs, labels = source_probs(ctx, m_st)
    votes = ctx.predict(ctx.source_for(name), data).logits
    return InterferenceDetector(m_st, lingering_set(votes, probs, labels, k, v_lo, p_lo), p_lo)


def _train_split(ctx: AuditContext):
    return ctx.target_train_data if getattr(ctx, "target_train_data", None) is not None \
        else ctx.target_data


def source_probs(ctx: AuditContext, m_st) -> tuple[torch.Tensor, torch.Tensor]:
    """M^st's source-class probabilities and labels over every source-image set."""
    probs, labels = [], []
    for data in ctx.source_data.values():
        pred = ctx.predict(m_st, data)
        probs.append(pred.probs)
        labels.append(pred.labels)
    return torch.cat(probs), torch.cat(labels)


def evaluate_on(detector: InterferenceDetector, ctx: AuditContext, name: str, data,
                label: str) -> dict:
    """AUROC of the score for M^t's mistakes, and precision/recall of the flag, on ``data``."""
    wrong = (ctx.predict(ctx.targets[name], data).preds != torch.as_tensor(data.targets)).numpy()
    scores = detector.score_logits(ctx.predict(detector.m_st, data).logits).numpy()
    flags = scores > detector.p_lo
    tp = int((flags & wrong).sum())
    return {"data": label, "images": len(wrong), "mistakes": int(wrong.sum()),
            "flagged": int(flags.sum()),
            "auroc": auroc(scores, wrong) if len(detector.classes) else float("nan"),
            "precision": tp / flags.sum() if flags.sum() else float("nan"),
            "recall": tp / wrong.sum() if wrong.sum() else float("nan"),
            "error rate flagged": float(wrong[flags].mean()) if flags.any() else float("nan"),
            "error rate unflagged": float(wrong[~flags].mean()) if (~flags).any() else
            float("nan")}


def calibrate(ctx: AuditContext, name: str, composites, *, v_lo: int = PAPER_V_LO,
              seed: int = 0, overlays: int = 20,
              background_ids=None) -> tuple[dict, pd.DataFrame]:
    """(p_lo, k) from a held-out half of the training split.

    v(c) uses half A; clean images of half B and composites pasting up to ``overlays`` half-B
    images on the backgrounds of ``composites`` are scored for every (p_lo, k) of the grid
    (p_lo = factor / S for ``P_LO_FACTORS``, k in ``K_GRID``). The best Youden's J wins.
    ``background_ids``: the backgrounds of the calibration composites (default: those of
    ``composites``; :func:`run` passes a half disjoint from the evaluation's).
    Returns the chosen ``{"p_lo", "k"}`` and the grid table.
    """
    from transferscope.data.composite import CompositeSet

    train = _train_split(ctx)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    half_a, half_b = train.subset(sorted(perm[::2])), train.subset(sorted(perm[1::2]))
    pick = sorted(torch.randperm(len(half_b), generator=torch.Generator().manual_seed(seed + 1))
                  [:overlays].tolist())
    bgs = list(composites.background_ids if background_ids is None else background_ids)
    calib = CompositeSet(composites.backgrounds, half_b, bgs, pick,
                         composites.size, composites.side_fraction, 1, composites.seed + 1)
    m_st = ctx.m_st(name)
    probs, labels = source_probs(ctx, m_st)
    votes = ctx.predict(ctx.source_for(name), half_a).logits
    clean_logits = ctx.predict(m_st, half_b).logits
    comp_logits = ctx.predict(m_st, calib).logits
    s = ctx.source.num_classes
    rows = []
    for k in K_GRID:
        if k > s:
            continue
        for f in P_LO_FACTORS:
            p = f / s
            cls = lingering_set(votes, probs, labels, k, v_lo, p)
            c, q = interference_scores(clean_logits, cls), interference_scores(comp_logits, cls)
            fc = float((c > p).double().mean()) if len(cls) else float("nan")
            fp = float((q > p).double().mean()) if len(cls) else float("nan")
            rows.append({"k": k, "p_lo": p, "lingering classes": len(cls),
                         "flag rate clean (half B)": fc, "flag rate composites (half B)": fp,
                         "youden_j": fp - fc})
    grid = pd.DataFrame(rows)
    ok = grid[grid["youden_j"].notna()]
    best = ok.loc[ok["youden_j"].idxmax()] if len(ok) else grid.iloc[0]
    return {"p_lo": float(best["p_lo"]), "k": int(best["k"])}, grid


def run(ctx: AuditContext, *, composites: dict | None, k: int, v_lo: int, p_lo: float | None,
        seed: int, n_boot: int, calibrate_setting: bool, extra_sets: dict | None) -> AnalysisResult:
    """Score every transferred model's detector at the paper's setting and at a calibrated
    one: clean validation images vs composites, and M^t's mistakes on every data set
    (``composites``: options of the shared composite plan, whose composites are scored)."""
    from transferscope.analyses.composites import plan
    from transferscope.data.composite import CompositeSet

    if composites is not None:
        extra_sets = {"composites": plan(ctx, **composites).composites, **(extra_sets or {})}

    sets = {"target (clean)": ctx.target_data, **(extra_sets or {})}
    comps = [d for d in sets.values() if isinstance(d, CompositeSet)]
    if not comps:
        comps = [plan(ctx).composites]
        sets["composites"] = comps[0]
    comp = comps[0]
    held_out = getattr(ctx, "target_train_data", None) is not None
    cal_bg, eval_bg = split_backgrounds(comp.items[:, 0].tolist(), seed)
    can_split = bool(cal_bg) and bool(eval_bg)
    comp_bg = comp.items[:, 0].numpy()
    in_eval = np.isin(comp_bg, eval_bg) if can_split else np.ones(len(comp), bool)
    rows, sep_rows, summary = [], [], {}
    for name in ctx.transferred():
        settings = {"paper": {"p_lo": 10.0 / ctx.source.num_classes if p_lo is None else p_lo,
                              "k": k}}
        rows_grid = None
        if calibrate_setting and can_split and len(_train_split(ctx)) >= 4:
            settings["calibrated"], grid = calibrate(ctx, name, comp, v_lo=v_lo, seed=seed,
                                                     background_ids=cal_bg)
            rows_grid = grid.assign(model=name)
        entry = {"held_out": held_out, "settings": {},
                 "backgrounds": {"calibration": len(cal_bg) if can_split else 0,
                                 "evaluation": int(len(set(comp_bg[in_eval].tolist())))}}
        m_t = ctx.targets[name]
        wrong_clean = (ctx.predict(m_t, ctx.target_data).preds
                       != torch.as_tensor(ctx.target_data.targets)).numpy()
        for label, st in settings.items():
            det = build(ctx, name, k=st["k"], v_lo=v_lo, p_lo=st["p_lo"])
            clean = det.score_logits(ctx.predict(det.m_st, ctx.target_data).logits).numpy()
            comp_scores = det.score_logits(ctx.predict(det.m_st, comp).logits).numpy()
            in_l = np.isin(comp.background_labels.numpy(), det.classes.numpy())
            pos_mask = in_eval & in_l  # positives: evaluation backgrounds of classes in L
            pos = comp_scores[pos_mask]
            sep = separation(clean, pos, det.p_lo, seed=seed, n_boot=n_boot,
                             clusters=comp_bg[pos_mask])
            sep.update(k=st["k"], lingering_classes=len(det.classes), verdict=verdict(sep),
                       label=label)
            if not sep.get("reason"):
                sep["operating_point"] = operating_point(clean, pos, comp_bg[pos_mask],
                                                         det.p_lo, seed=seed, n_boot=n_boot)
                sep["mistakes_clean"] = mistake_auroc(
                    clean, wrong_clean, np.arange(clean.size), "target image", seed=seed,
                    n_boot=n_boot)
                wrong_comp = (ctx.predict(m_t, comp).preds != comp.targets).numpy()
                sep["mistakes_composites"] = mistake_auroc(
                    comp_scores[in_eval], wrong_comp[in_eval], comp_bg[in_eval],
                    "background image", seed=seed, n_boot=n_boot)
                sep["useful"], sep["why_not"] = useful(sep["operating_point"],
                                                       sep["mistakes_clean"])
            entry["settings"][label] = sep
            sep_rows.append({"model": name, "setting": label, **{
                kk: v for kk, v in sep.items() if kk not in (
                    "auroc_ci95", "operating_point", "mistakes_clean", "mistakes_composites")},
                "auroc lo": sep["auroc_ci95"][0], "auroc hi": sep["auroc_ci95"][1]})
            for dlabel, data in sets.items():
                rows.append({"model": name, "setting": label, "lingering classes":
                             len(det.classes), **evaluate_on(det, ctx, name, data, dlabel)})
            if label == "paper":
                entry.update(lingering_classes=len(det.classes), p_lo=det.p_lo, k=st["k"],
                             by_data=[r for r in rows if r["model"] == name and
                                      r["setting"] == "paper"])
        # the verdict is that of the calibrated setting (chosen on calibration backgrounds
        # only), not the better of the two on the evaluation data; "separates" needs the
        # clean score held out
        main = entry["settings"].get("calibrated", entry["settings"]["paper"])
        entry["separates"] = bool(main["separates"]) and held_out
        entry["useful_warning"] = bool(main.get("useful", False))
        entry["verdict"] = ("separates" if entry["separates"] else "does not separate"
                            if held_out else "cannot tell (clean score not held out)")
        entry["verdict_text"] = "; ".join(f"{lab} setting (p_lo {r['p_lo']:.3g}, k {r['k']}): "
                                          f"{r['verdict']}"
                                          for lab, r in entry["settings"].items())
        if rows_grid is not None:
            entry["calibration_grid"] = rows_grid.drop(columns="model").to_dict("records")
        summary[name] = entry
    notes = ["Separation: clean validation images (negatives) vs composites over backgrounds "
             "of lingering classes L (positives), on background images disjoint from those "
             "the (p_lo, k) calibration used; AUROC of M^st's largest probability over L with "
             "a 95 % interval resampling target images and background images; 'separates' "
             "when the interval's lower end is above 0.5 and the clean score is held out.",
             "The operating point: flag rates on clean images and composites, the share of "
             "composites flagged at 5 % false positives on clean images, and the AUROC of the "
             "score for M^t's own mistakes (the warning a user wants); a flag is called a "
             f"useful warning only when it flags at most {MAX_CLEAN_FLAG_RATE:.0%} of clean "
             "images and the mistake-AUROC interval lies above 0.5.",
             "v(c) over the target training split (the fine-tuning data); calibration on a "
             "held-out half of it." if held_out else
             "No training split in the context: v(c) was counted on the validation images the "
             "detector is scored on, so the clean score is NOT held out.",
             "The 'evaluation' table scores the flag for M^t's wrong predictions on each set."]
    return AnalysisResult("interference_detector", summary,
                          {"evaluation": pd.DataFrame(rows), "separation": pd.DataFrame(sep_rows)},
                          notes=notes)


class DetectorOptions(AnalysisOptions):
    k: int = Field(PAPER_K, ge=1, description="top-k votes defining source-only classes")
    v_lo: int = Field(PAPER_V_LO, ge=0, description="vote threshold of source-only classes")
    p_lo: float | None = Field(None, ge=0, le=1, description="lingering threshold (default "
                               "10 / number of source classes)")
    seed: int = Field(0, description="seed of the calibration split and the bootstrap")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples of the AUROC interval")
    calibrate_setting: bool = Field(True, description="also score a (p_lo, k) calibrated on a "
                                    "held-out half of the training split")
    composites: CompositeOptions | None = Field(None, description="also evaluate on the "
                                                "composites of this plan")
    extra_sets: dict | None = Field(None, description="more labelled sets to score the flag "
                                    "on (Python only: name -> data set)")


def finding(result: AnalysisResult) -> Finding | None:
    """The detector at the operating point a user meets, and whether to deploy it
    (:func:`~transferscope.analyses._detector_verdicts.detector_finding`)."""
    return detector_finding(result.summary)


register_analysis("interference_detector", title="Interference detector", paper="paper 001, "
                  "eq. 5", section="memory", options=DetectorOptions, order=8, run=run,
                  finding=finding)

__all__ = ["InterferenceDetector", "build", "calibrate", "evaluate_on", "interference_scores",
           "lingering_set", "run", "separation", "verdict"]

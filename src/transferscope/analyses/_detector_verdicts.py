"""The interference detector at the operating point users meet (paper 001, eq. 5): flag rates
on clean images and composites, the true-positive rate at 5 % false positives, and the AUROC
for predicting the model's own mistakes - each with an interval over its independent unit
(target image for clean images, background image for composites) - and whether a flag is a
useful warning.
"""

from __future__ import annotations

import numpy as np

from transferscope.findings import ClaimCheck, Finding
from transferscope.stats import (Interval, Verdict, auroc, cluster_mean, cluster_statistic,
                                 verdict_of)

MAX_CLEAN_FLAG_RATE = 0.10  # a warning that flags more clean images than this is noise
FPR = 0.05


def split_backgrounds(background_ids, seed: int = 0) -> tuple[list[int], list[int]]:
    """Background images split in two seeded halves: calibration, evaluation (disjoint).

    >>> split_backgrounds([4, 5, 6, 7], seed=0)[0] and True
    True
    >>> a, b = split_backgrounds(range(10)); sorted(a + b) == list(range(10)) and not set(a) & set(b)
    True
    """
    ids = sorted({int(b) for b in background_ids})
    perm = np.random.default_rng(seed).permutation(len(ids))
    cal = sorted(ids[i] for i in perm[: len(ids) // 2])
    return cal, sorted(set(ids) - set(cal))


def _iv(d: Interval) -> dict:
    return d.to_dict()


def operating_point(clean: np.ndarray, composites: np.ndarray, comp_backgrounds: np.ndarray,
                    p_lo: float, *, seed: int = 0, n_boot: int = 1000) -> dict:
    """Flag rates at ``p_lo``, the AUROC clean-vs-composite and the true-positive rate at 5 %
    false positives, each with an interval that resamples target images (clean) and
    background images (composites) separately.

    Example:
        >>> r = operating_point(np.array([0.1, 0.2, 0.3, 0.05]), np.array([0.5, 0.6, 0.7, 0.8]),
        ...                     np.array([0, 0, 1, 1]), 0.4, n_boot=50)
        >>> r["flag_rate_clean"]["value"], r["flag_rate_composites"]["value"], r["auroc"]["value"]
        (0.0, 1.0, 1.0)
    """
    clean, composites = np.asarray(clean, float), np.asarray(composites, float)
    scores = np.concatenate([clean, composites])
    pos = np.concatenate([np.zeros(clean.size, bool), np.ones(composites.size, bool)])
    clusters = np.concatenate([[f"img{i}" for i in range(clean.size)],
                               [f"bg{b}" for b in np.asarray(comp_backgrounds)]])

    def tpr_at_fpr(i):
        c, p = scores[i][~pos[i]], scores[i][pos[i]]
        if not c.size or not p.size:
            return float("nan")
        thr = np.quantile(c, 1 - FPR, method="higher")
        return float((p > thr).mean())

    kw = dict(n_boot=n_boot, seed=seed)
    return {
        "flag_rate_clean": _iv(cluster_mean((clean > p_lo).astype(float), unit="target image",
                                            **kw)),
        "flag_rate_composites": _iv(cluster_mean((composites > p_lo).astype(float),
                                                 comp_backgrounds, unit="background image", **kw)),
        "auroc": _iv(cluster_statistic(lambda i: auroc(scores[i], pos[i]), clusters, strata=pos,
                                       unit="image (clean) / background image", **kw)),
        "tpr_at_5pct_fpr": _iv(cluster_statistic(tpr_at_fpr, clusters, strata=pos,
                                                 unit="image (clean) / background image", **kw)),
    }


def mistake_auroc(scores: np.ndarray, wrong: np.ndarray, clusters, unit: str, *, seed: int = 0,
                  n_boot: int = 1000) -> dict:
    """AUROC of the detector's score for the model's own mistakes (does a high score warn of a
    wrong answer?), with an interval over ``unit``; NaN without mistakes or without right
    answers."""
    scores, wrong = np.asarray(scores, float), np.asarray(wrong, bool)
    if not wrong.any() or wrong.all() or np.isnan(scores).all():
        return Interval(float("nan"), float("nan"), float("nan"), unit, 0).to_dict()
    return _iv(cluster_statistic(lambda i: auroc(scores[i], wrong[i]), clusters, unit=unit,
                                 seed=seed, n_boot=n_boot))


def useful(point: dict, mistakes_clean: dict) -> tuple[bool, str]:
    """Whether a flag is a useful warning: few clean images flagged and a mistake-AUROC whose
    interval lies above 0.5 - and why not."""
    fc = point["flag_rate_clean"]["value"]
    m = Interval(**mistakes_clean)
    reasons = []
    if not np.isfinite(fc) or fc > MAX_CLEAN_FLAG_RATE:
        reasons.append(f"it flags {100 * fc:.0f} % of clean images (at most "
                       f"{100 * MAX_CLEAN_FLAG_RATE:.0f} % for a usable warning)")
    if not (m.finite and m.lo > 0.5):
        reasons.append("its score does not predict the model's mistakes on clean images "
                       f"(AUROC {m.value:.2f} [{m.lo:.2f}, {m.hi:.2f}])" if m.finite else
                       "its mistake-AUROC cannot be estimated here")
    return not reasons, "; ".join(reasons)


def detector_finding(summary: dict) -> Finding | None:
    """Structured finding: the operating point users meet and whether to deploy the flag."""
    if not summary:
        return None
    clauses, estimates, checks, steps, caveats = [], [], [], [], []
    for name, v in summary.items():
        main = v["settings"].get("calibrated", v["settings"].get("paper", {}))
        if "operating_point" not in main:
            clauses.append(f"{name}: {main.get('reason') or 'cannot be scored'}")
            continue
        op, mk = main["operating_point"], main["mistakes_clean"]
        fc, fp = op["flag_rate_clean"], op["flag_rate_composites"]
        clauses.append(
            f"{name} ({main['label']} setting, p_lo {main['p_lo']:.3g}, k {main['k']}): flags "
            f"{100 * fc['value']:.0f} % of clean images and {100 * fp['value']:.0f} % of "
            f"composites over L; {100 * op['tpr_at_5pct_fpr']['value']:.0f} % of composites "
            f"at 5 % false positives; mistake-AUROC on clean images {mk['value']:.2f}"
            + (f" [{mk['lo']:.2f}, {mk['hi']:.2f}]" if np.isfinite(mk['lo']) else "")
            + f" - {'a useful warning' if main['useful'] else 'not a useful warning: ' + main['why_not']}")
        for label, d in (("flag rate clean", fc), ("flag rate composites", fp),
                         ("AUROC clean vs composites", op["auroc"]),
                         ("mistake-AUROC clean", mk)):
            estimates.append((f"{name} {label}", Interval(**d)))
        if not v.get("held_out", True):
            caveats.append("the lingering set was counted on the images it is scored on "
                           "(no training split): the clean flag rate is not held out")
        if not checks:
            verdict, why = verdict_of(Interval(**mk), ">", 0.5)
            checks.append(ClaimCheck("001.detector", verdict, f"{name}: mistake-AUROC on clean "
                                     f"images vs 0.5 - {why}", Interval(**mk),
                                     "cluster bootstrap over target images"))
        if not main["useful"]:
            steps.append(f"do not deploy `transferscope guard` as a warning for {name}")
    return Finding("Interference detector", "the flag at the operating point a user meets "
                   "(paper 001, eq. 5; calibrated on background images disjoint from those it "
                   "is scored on, positives only composites over lingering classes L)",
                   clauses=tuple(clauses), estimates=tuple(estimates), checks=tuple(checks),
                   caveat="; ".join(dict.fromkeys(caveats)),
                   next_step="; ".join(steps) + ("; check the flag against mistakes on your own "
                                                 "deployment data" if steps else ""),
                   numbers={n: v.get("verdict") for n, v in summary.items()})


__all__ = ["Verdict", "detector_finding", "mistake_auroc", "operating_point",
           "split_backgrounds", "useful"]

"""Resolution notes: what an analysis registers as ``resolution=`` to say where a per-class
measure rests on few samples (the report shows them under the analysis; see
:func:`transferscope.analyses.register_analysis`).

Shared here because several memory analyses measure per source class over the same samples
(the retained-knowledge gallery says how many each class had)."""

from __future__ import annotations

from typing import Callable

FEW_SAMPLES = 20  # per-class measures over at most this many samples get a resolution note
REMEDY = ("For a finer measure use more views per image ('views' under [source_images]) or "
          "labelled ImageNet validation images (50 per class) as source images.")

__all__ = ["FEW_SAMPLES", "REMEDY", "composite_notes", "denominator", "per_class_notes",
           "samples_per_class", "values_text"]


def denominator(values, max_n: int = 200) -> int | None:
    """The smallest n <= ``max_n`` with every value a multiple of 1/n (None if there is none):
    the sample count a set of per-class fractions was measured over.

    Example:
        >>> denominator([0.0, 0.4, 1.0, 0.6])
        5
    """
    vals = [float(v) for v in values if v is not None and v == v]
    if not vals:
        return None
    return next((n for n in range(1, max_n + 1)
                 if all(abs(v * n - round(v * n)) < 1e-6 for v in vals)), None)


def samples_per_class(results: dict) -> dict[str, dict]:
    """Per source-image set: ``{"samples", "images", "views"}`` of its sparsest class, from the
    retained-knowledge gallery, else inferred from the per-class recall values."""
    out = {}
    ret = results.get("retained_knowledge")
    gallery = ret.tables.get("gallery") if ret else None
    if gallery is not None and len(gallery):
        for set_name, g in gallery.groupby("source images", sort=False):
            row = g.loc[g["samples"].idxmin()]
            out[str(set_name)] = {k: int(row[k]) for k in ("samples", "images", "views")}
    elif ret is not None and "per_class" in ret.tables and len(ret.tables["per_class"]):
        for set_name, g in ret.tables["per_class"].groupby("source images", sort=False):
            n = denominator(g["recall"])
            if n:
                out[str(set_name)] = {"samples": n, "images": None, "views": None}
    return out


def values_text(n: int) -> str:
    """The n + 1 values a fraction over n samples can take, in percent.

    Example:
        >>> values_text(4)
        '0, 25, 50, 75, 100%'
    """
    vals = [f"{100 * k / n:.0f}" for k in range(n + 1)]
    return ", ".join(vals if n <= 6 else vals[:3] + ["..."] + vals[-2:]) + "%"


def _how(info: dict) -> str:
    if info.get("images") is None:
        return ""
    return f" ({info['images']} image{'s' * (info['images'] != 1)} x {info['views']} views)"


def per_class_notes(results: dict, what: str,
                    more: Callable[[int, list[float]], str] | None = None) -> list[str]:
    """One note per source-image set whose sparsest class has at most :data:`FEW_SAMPLES`
    samples: ``what`` (e.g. "recall") takes only n + 1 values; ``more(n, percents)`` adds
    the analysis's own consequence (empty bins, no test)."""
    notes = []
    for set_name, info in samples_per_class(results).items():
        n = info["samples"]
        if n > FEW_SAMPLES:
            continue
        text = (f"Resolution: in '{set_name}' each class's {what} is a fraction over {n} "
                f"samples{_how(info)}, so it takes only {n + 1} values ({values_text(n)})")
        if more is not None:
            text += more(n, [100 * k / n for k in range(n + 1)])
        notes.append(text + ". " + REMEDY)
    return notes


def composite_notes(results: dict, per_pasted_class: bool) -> list[str]:
    """A note when the composites' per-background table rests on few composites: each
    accuracy per (background, pasted class) when ``per_pasted_class``, else each background
    class's total (a mean distraction)."""
    comp = results.get("composites")
    per_bg = comp.tables.get("per_background") if comp is not None else None
    if per_bg is None or not len(per_bg) or "composites" not in per_bg:
        return []
    k = int(per_bg["composites"].min() if per_pasted_class else
            per_bg.groupby("background class")["composites"].sum().min())
    if k > FEW_SAMPLES:
        return []
    what = ("each per-background accuracy (per pasted class)" if per_pasted_class else
            "each class's mean distraction")
    return [f"Resolution: {what} rests on as few as {k} composites"
            + (f", so an accuracy takes only {k + 1} values" if per_pasted_class else "")
            + ". More 'overlays_per_class' or 'repeats' under [analyses.composites] give a "
            "finer measure."]

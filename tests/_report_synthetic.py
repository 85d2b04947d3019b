"""A tiny synthetic audit result (no model, no training) for the report tests: per-class
recall and bias of 60 source classes, galleries with real JPEG thumbnails, target classes
named by wnid (imagewoof's layout) and a model name that tries to break out of the page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._thumbs import jpeg, overlay, strip
from transferscope.analyses.retained_knowledge import RECALL_BINS
from transferscope.data.imagenet import imagenet_names

EVIL = "</script><img src=x onerror=window.__xss=1>"
MODELS = ["fine-tuned", EVIL]
TARGETS = ["n02086240", "n02087394"]  # Shih Tzu, Rhodesian Ridgeback
CLASSES = list(range(0, 600, 10))  # 60 source classes
VIEWS = 5


def _img(c: int, side: int = 40) -> Image.Image:
    rng = np.random.default_rng(c)
    arr = np.zeros((side, side, 3), np.uint8)
    arr[...] = rng.integers(0, 255, 3)
    arr[: side // 2, : side // 2] = 255 - arr[0, 0]
    return Image.fromarray(arr)


def recall_of(c: int, model: str) -> float:
    """Known recall per (class, model): multiples of 1/VIEWS."""
    return ((c // 10) * (3 if model == "fine-tuned" else 7) % (VIEWS + 1)) / VIEWS


def bias_of(c: int) -> float:
    """Known bias toward the first target class: multiples of 1/VIEWS."""
    return ((c // 10) % (VIEWS + 1)) / VIEWS


def synthetic_results(out_dir) -> dict[str, AnalysisResult]:
    """Results saved under ``out_dir`` (and returned), shaped like the real analyses'."""
    names = imagenet_names()
    src_models = {"source efficientnet_lite0 (M^s)": "source",
                  "fine-tuned + source head (M^st)": "fine-tuned"}
    per_class, bins = [], []
    for label, key in src_models.items():
        rec = [recall_of(c, key) for c in CLASSES]
        per_class += [{"source images": "samples", "model": label, "class": c,
                       "class name": names[c], "recall": r} for c, r in zip(CLASSES, rec)]
        pct = np.array(rec) * 100
        idx = (pct > 50) * (1 + sum((pct >= e) for e in (60, 70, 80, 90)))
        counts = np.bincount(idx, minlength=6).tolist()
        bins.append({"source images": "samples", "model": label, **dict(zip(RECALL_BINS, counts)),
                     "All": len(CLASSES), "mean recall": float(np.mean(rec))})
    gallery = [{"source images": "samples", "class": c, "images": 1, "views": VIEWS,
                "samples": VIEWS, "image": f"class/0/{c}"} for c in CLASSES]
    retained = AnalysisResult(
        "retained_knowledge",
        {"samples/fine-tuned + source head (M^st)": {
            "classes": len(CLASSES), "mean_recall": 0.4, "mean_recall_ci95": [0.31, 0.49],
            "classes_recall_ge_50": 20, "bins": {}}},
        {"bins": pd.DataFrame(bins), "per_class": pd.DataFrame(per_class),
         "gallery": pd.DataFrame(gallery)},
        notes=["a note <b>with</b> markup"],
        images={f"class/0/{c}": jpeg(strip([_img(c)] * VIEWS, 48)) for c in CLASSES})
    bias_rows = []
    for m in MODELS:
        for c in CLASSES:
            b = bias_of(c)
            bias_rows.append({"source images": "samples", "model": m, "class": c,
                              "class name": names[c], "strength": abs(2 * b - 1),
                              f"B[{TARGETS[0]}]": b, f"B[{TARGETS[1]}]": 1 - b})
    table = pd.DataFrame([{"source images": "samples", "model": m, "classes": len(CLASSES),
                           "strongly biased (max B >= 0.8)": 24,
                           **{f"base rate {t}": 0.5 for t in TARGETS}} for m in MODELS])
    bias = AnalysisResult(
        "interference_bias",
        {f"samples/{m}": {"strongly_biased": 24, "mean_strength": 0.5,
                          "toward": {TARGETS[0]: 12, TARGETS[1]: 12}} for m in MODELS},
        {"table": table, "per_class": pd.DataFrame(bias_rows)})
    bgs = CLASSES[:4]
    comp_rows = [{"background class": c, "composite": 2 * i + j, "pasted class": TARGETS[j],
                  "image": f"composite/{2 * i + j}", **{m: TARGETS[(i + j) % 2] for m in MODELS}}
                 for i, c in enumerate(bgs) for j in range(2)]
    per_bg = pd.DataFrame([{"background class": c, "background name": names[c],
                            "group": "neutral", "pasted class": t, "composites": 2,
                            **{m: 0.5 for m in MODELS}} for c in bgs for t in TARGETS])
    composites = AnalysisResult(
        "composites", {"models": {m: {"clean": 0.9, "neutral": 0.6, "against": 0.4}
                                  for m in MODELS}},
        {"per_background": per_bg, "gallery": pd.DataFrame(comp_rows)},
        images={r["image"]: jpeg(_img(r["composite"] + 7, 96)) for r in comp_rows})
    cam = torch.zeros(4, 4)
    cam[0, 0] = 1.0
    cam_rows, cam_images = [], {}
    for i, c in enumerate(bgs):
        row = {"background": c, "composite": 2 * i, "pasted class": TARGETS[0],
               "image": f"cam/{2 * i}/image", "cam source": f"cam/{2 * i}/source"}
        cam_images[row["image"]] = jpeg(_img(c, 96))
        cam_images[row["cam source"]] = jpeg(overlay(_img(c, 96), cam, 96))
        for j, m in enumerate(MODELS):
            row[f"cam {m}"] = f"cam/{2 * i}/{j}"
            cam_images[row[f"cam {m}"]] = jpeg(overlay(_img(c, 96), cam.T, 96))
            row[f"distraction {m}"] = 0.25 * j
        cam_rows.append(row)
    distraction = AnalysisResult(
        "distraction", {m: {"mean": 0.2} for m in MODELS},
        {"per_class": pd.DataFrame([{"background": c, "background name": names[c],
                                     **{m: 0.2 for m in MODELS}} for c in bgs]),
         "gallery": pd.DataFrame(cam_rows)}, images=cam_images)
    agreement = AnalysisResult(
        "agreement", {}, {"pearson": pd.DataFrame([
            {"source images": "samples", "quantity": "recall of M^st", "model A": MODELS[0],
             "model B": MODELS[1], "Pearson R": -0.5, "classes": len(CLASSES)}])})
    results = {r.name: r for r in (retained, bias, agreement, composites, distraction)}
    for r in results.values():
        r.save(out_dir)
    return results

"""Remedies for lingering memories, measured: standard fine-tuning vs each remedy over seeds.

For one source model and one target set, trains ``standard`` and every remedy for each seed,
then audits all of them together on held-out data: clean target accuracy (validation split),
composite accuracy over backgrounds biased against the pasted class (paper 000), the number
of strongly biased source classes (eq. 1, max B >= 0.8), mean Grad-CAM distraction (eq. 4)
and the training cost. Remedies only ever see the training half of the source classes and
the target training split; the evaluation uses the other half and the validation split, so
evaluation composites share no image with training. Backgrounds are chosen once, by the
bias of standard fine-tuning averaged over its seeds, and are the same for every model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from transferscope._io import atomic_write_json
from transferscope._progress import log
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.context import AuditContext
from transferscope.audit import run_memory_audit
from transferscope.data.folder import image_folder, source_images
from transferscope.data.views import ViewSet
from transferscope.engine.recipes import get_recipe
from transferscope.engine.training import TrainConfig, load_run
from transferscope.errors import ConfigError
from transferscope.remedies import REMEDIES, fine_tune, make_remedy
from transferscope.remedies._shared import source_model, split_source_classes

STANDARD = "standard"
DEFAULT_VARIANTS = (STANDARD, *REMEDIES)
METRICS = {"clean accuracy": "clean", "composite accuracy (biased against)": "against",
           "composite accuracy (neutral)": "neutral", "strongly biased classes": "biased",
           "mean distraction": "distraction", "training seconds": "cost"}


def _cost(run_dir: Path) -> float:
    """Seconds spent in training epochs (``timings.json``, else ``metrics.json``)."""
    path = run_dir / "timings.json"
    if path.is_file():
        return float(sum(json.loads(path.read_text()).values()))
    return float(sum(m.get("seconds", 0.0) for m in json.loads(
        (run_dir / "metrics.json").read_text())))


def train_variants(target: str, out: Path, *, arch: str, recipe: str, epochs: int,
                   image_size: int, seeds, variants, remedy_params: dict, prune_epochs: int,
                   prune_lr_factor: float, source: str, recipe_overrides: dict | None = None,
                   data_root=None) -> dict[str, dict]:
    """Train every (variant, seed); returns ``{name: {variant, seed, run, cost}}``."""
    overrides = {k: v for k, v in (recipe_overrides or {}).items() if v is not None}
    rec = get_recipe(recipe, epochs=epochs, image_size=image_size, **overrides)
    runs: dict[str, dict] = {}
    for seed in seeds:
        for variant in variants:
            name, run = f"{variant}-s{seed}", out / "runs" / f"{variant}-s{seed}"
            config = TrainConfig(arch=arch, init="imagenet", data=target, seed=seed, recipe=rec)
            remedy = None
            if variant != STANDARD:
                remedy = make_remedy(variant, source=source, data_root=data_root,
                                     **remedy_params.get(variant, {}))
            if variant == "pruning":  # prune the standard model of this seed, then briefly tune
                std = out / "runs" / f"{STANDARD}-s{seed}"
                if not (std / "model.safetensors").is_file():
                    raise ConfigError("pruning starts from the standard fine-tune: keep "
                                      f"'{STANDARD}' in the variants")
                config = config.model_copy(update={
                    "init": str(std / "model.safetensors"),
                    "recipe": get_recipe(recipe, **{**overrides, "epochs": prune_epochs,
                                                    "image_size": image_size,
                                                    "lr": rec.lr * prune_lr_factor})})
            log(f"[bold]remedy study[/bold] training {name}")
            fine_tune(config, run, remedy, resume=(run / "config.json").exists(),
                      data_root=data_root)
            cost = _cost(run) + (runs[f"{STANDARD}-s{seed}"]["cost"]
                                 if variant == "pruning" else 0.0)
            runs[name] = {"variant": variant, "seed": seed, "run": run, "cost": cost}
    return runs


def evaluate_variants(runs: dict[str, dict], target: str, out: Path, *, arch: str,
                      image_size: int, source: str, views: int, split_seed: int,
                      composite_params: dict, data_root=None) -> pd.DataFrame:
    """Audit every run on held-out data; one row per run."""
    _, eval_classes = split_source_classes(1000, split_seed)
    base = source_images(source, data_root=data_root)
    keep = set(eval_classes)
    held_out = base.subset([i for i, s in enumerate(base.samples) if s.label in keep])
    ctx = AuditContext(source=source_model(arch),
                       targets={n: load_run(r["run"]) for n, r in runs.items()},
                       target_data=image_folder(target, "val", data_root=data_root),
                       source_data={"held-out source": ViewSet(held_out, views, seed=0)
                                    if views > 1 else held_out},
                       image_size=image_size)
    res = run_memory_audit(ctx, out / "audit", ["interference_bias", "composites",
                                                  "distraction"],
                           composite_params=composite_params)
    bias = res["interference_bias"].summary
    comp = res["composites"].summary["models"]
    dist = res["distraction"].summary
    rows = []
    for name, r in runs.items():
        rows.append({"run": name, "variant": r["variant"], "seed": r["seed"],
                     "clean": comp[name]["clean"], "against": comp[name].get("against"),
                     "neutral": comp[name].get("neutral"),
                     "biased": bias[f"held-out source/{name}"]["strongly_biased"],
                     "distraction": dist[name]["mean"], "cost": r["cost"]})
    return pd.DataFrame(rows)


def summarise(per_run: pd.DataFrame, max_clean_drop: float = 0.01) -> tuple[pd.DataFrame, dict]:
    """Mean ± std per variant and the verdict, on differences paired by seed (a remedy and the
    standard fine-tune of one seed share the head's initialisation and the batch order).

    A remedy counts if its composite accuracy over biased backgrounds rises, on average over
    seeds, by more than the seed-to-seed spread (std) of that rise, while mean clean accuracy
    falls by at most ``max_clean_drop``.
    """
    agg = per_run.groupby("variant", sort=False)[list(METRICS.values())].agg(["mean", "std"])
    std_runs = per_run[per_run["variant"] == STANDARD].set_index("seed")
    rows, verdicts = [], {}
    for variant in agg.index:
        row = {"variant": variant, "seeds": int((per_run["variant"] == variant).sum())}
        for label, col in METRICS.items():
            m, s = agg.loc[variant, (col, "mean")], agg.loc[variant, (col, "std")]
            row[label] = f"{m:.3f} ± {0 if np.isnan(s) else s:.3f}" if col != "cost" else \
                f"{m:.0f} ± {0 if np.isnan(s) else s:.0f}"
        mine = per_run[per_run["variant"] == variant].set_index("seed")
        seeds = mine.index.intersection(std_runs.index)
        if variant != STANDARD and len(seeds):
            diff = {col: mine.loc[seeds, col].astype(float) - std_runs.loc[seeds, col].astype(float)
                    for col in ("clean", "against", "biased", "distraction")}
            d_clean, d_against = float(diff["clean"].mean()), float(diff["against"].mean())
            spread = float(diff["against"].std()) if len(seeds) > 1 else float("nan")
            lowers = bool(len(seeds) > 1 and d_against > max(spread, 0.0))
            keeps = bool(d_clean >= -max_clean_drop)
            row["Δ clean"] = f"{d_clean:+.3f}"
            row["Δ against"] = f"{d_against:+.3f} ± {0 if np.isnan(spread) else spread:.3f}"
            row["Δ strongly biased"] = f"{diff['biased'].mean():+.1f}"
            row["Δ distraction"] = f"{diff['distraction'].mean():+.3f}"
            row["counts"] = "yes" if lowers and keeps else "no"
            verdicts[variant] = {"lowers_interference": lowers, "keeps_clean_accuracy": keeps,
                                 "delta_clean": d_clean, "delta_against": d_against,
                                 "delta_against_std": spread, "paired_seeds": len(seeds),
                                 "counts": lowers and keeps}
        rows.append(row)
    return pd.DataFrame(rows), verdicts


def run_remedy_study(target: str, out: str | os.PathLike, *, arch: str = "efficientnet_lite0",
                     recipe: str = "paper002", epochs: int = 5, image_size: int = 128,
                     seeds=(0, 1, 2), variants=DEFAULT_VARIANTS, remedy_params: dict | None = None,
                     prune_epochs: int = 2, prune_lr_factor: float = 0.1,
                     source: str = "imagenet-samples", views: int = 2, split_seed: int = 0,
                     composite_params: dict | None = None, batch_size: int | None = None,
                     lr: float | None = None, data_root=None) -> AnalysisResult:
    """Train and audit standard fine-tuning and each remedy; writes ``out/results/remedies*``.

    ``batch_size`` / ``lr`` override the recipe's; ``composite_params`` the evaluation
    composites (``style`` paper000: overlay 10 % of the image, paper001: 16 %).

    Example:
        >>> run_remedy_study("hymenoptera", "remedies", seeds=(0,))  # doctest: +SKIP
    """
    out = Path(out)
    variants = list(variants)
    unknown = [v for v in variants if v != STANDARD and v not in REMEDIES]
    if unknown:
        raise ConfigError(f"unknown variants {unknown}; known: {', '.join(DEFAULT_VARIANTS)}")
    if STANDARD in variants:  # the standard runs come first: references and pruning starts
        variants = [STANDARD] + [v for v in variants if v != STANDARD]
    stray = sorted(set(remedy_params or {}) - set(variants) - {STANDARD})
    if stray:
        raise ConfigError(f"settings given for {stray}, which are not among the variants "
                          f"{variants}")
    params = {v: {"split_seed": split_seed, **(remedy_params or {}).get(v, {})}
              for v in variants if v != STANDARD}
    for v, p in params.items():
        make_remedy(v, **p)  # unknown settings fail here, before anything trains
    comp = {"style": "paper000", "n_biased": 5, "overlays_per_class": 10, "repeats": 2,
            **(composite_params or {})}
    if STANDARD in variants and "reference" not in comp:  # backgrounds biased for standard
        comp["reference"] = [f"{STANDARD}-s{s}" for s in seeds]  # fine-tuning, any seed
    runs = train_variants(target, out, arch=arch, recipe=recipe, epochs=epochs,
                          image_size=image_size, seeds=list(seeds), variants=variants,
                          remedy_params=params, prune_epochs=prune_epochs,
                          prune_lr_factor=prune_lr_factor, source=source,
                          recipe_overrides={"batch_size": batch_size, "lr": lr},
                          data_root=data_root)
    per_run = evaluate_variants(runs, target, out, arch=arch, image_size=image_size,
                                source=source, views=views, split_seed=split_seed,
                                composite_params=comp, data_root=data_root)
    table, verdicts = summarise(per_run)
    settings = {"target": target, "arch": arch, "recipe": recipe, "epochs": epochs,
                "batch_size": batch_size, "lr": lr,
                "image_size": image_size, "seeds": list(seeds), "variants": variants,
                "remedy_params": params, "prune_epochs": prune_epochs,
                "prune_lr_factor": prune_lr_factor, "source": source, "views": views,
                "composites": comp}
    result = AnalysisResult("remedies", {"settings": settings, "verdicts": verdicts},
                            {"summary": table, "per_run": per_run})
    result.notes.append(
        "Mean ± std over seeds. 'against' = accuracy on composites whose background class "
        "is biased toward another target class; biased = source classes with max B >= 0.8; "
        "training seconds include, for pruning, the standard fine-tune it starts from. Δ = "
        "remedy − standard of the same seed, mean (± std) over seeds. A remedy counts if "
        "'against' rises by more than the std of that rise and clean accuracy falls by at "
        "most 1 point. Evaluation uses held-out source classes and the "
        "validation split only.")
    result.figures["against"] = _figure(per_run)
    result.save(out)
    atomic_write_json(out / "remedies_runs.json",
                      {n: {**r, "run": str(r["run"])} for n, r in runs.items()})
    return result


def _figure(per_run: pd.DataFrame):
    from transferscope.analyses._plots import subplots

    fig, axes = subplots(1, 3, figsize=(12, 3.4))
    order = list(dict.fromkeys(per_run["variant"]))
    for ax, (col, label) in zip(axes, [("clean", "clean accuracy"),
                                       ("against", "composites, biased backgrounds"),
                                       ("distraction", "mean Grad-CAM distraction")]):
        g = per_run.groupby("variant")[col]
        ax.bar(range(len(order)), [g.mean()[v] for v in order],
               yerr=[0 if np.isnan(g.std()[v]) else g.std()[v] for v in order], capsize=3)
        for i, v in enumerate(order):
            ys = per_run.loc[per_run["variant"] == v, col]
            ax.scatter([i] * len(ys), ys, color="k", s=8, zorder=3)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return fig

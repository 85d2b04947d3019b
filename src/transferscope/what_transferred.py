"""Papers 003/004 end to end: compare models fine-tuned from pre-trained weights (P-T) with
models trained from random init (RI-T), two instances of each, plus the pre-trained model P.

Runs mistakes, CKA, parameter distances, performance barriers, basins (Definition 3.1, for the
hull of the two P-T and of the two RI-T solutions), module criticality and conv
spectra on the target validation images; predictions come from the shared cache and the image
batches are decoded once and reused by every weight-space analysis.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import torch

from transferscope._io import tensors_sha256
from transferscope._progress import log
from transferscope.analyses import (barriers, basins, cka, criticality, distances, mistakes,
                                    spectra)
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.context import AuditContext
from transferscope.data import eval_transform
from transferscope.engine import load_run
from transferscope.errors import ConfigError

WHAT_ANALYSES = ("mistakes", "cka", "distances", "barriers", "basins", "criticality",
                 "spectra")
BASIN_SAMPLES, BASIN_PAIRS = 8, 4  # Monte-Carlo points of the hull; vicinity pairs per delta
CRITICALITY_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
CRITICALITY_SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.35)  # relative noise; at 0.5 most blocks fail
CRITICALITY_DRAWS = 3  # noise draws averaged per grid point (Definition 3.2's expectation)


def roles(ctx: AuditContext, inits: dict[str, str]) -> tuple[list[str], list[str]]:
    """Names of the P-T and RI-T models: same architecture as the source, by their init."""
    same = [n for n, m in ctx.targets.items() if m.arch == ctx.source.arch]
    pt = [n for n in same if inits.get(n) == "imagenet"]
    rit = [n for n in same if inits.get(n) == "random"]
    return pt, rit


def run_what_transferred(ctx: AuditContext, out: str | Path, inits: dict[str, str],
                         run_dirs: dict[str, Path], analyses=WHAT_ANALYSES, *,
                         lambdas=tuple(np.linspace(-1, 2, 13)),
                         bn_reestimate: bool | None = None,
                         criticality_images: int = 64, criticality_modules: int = 6,
                         seed: int = 0) -> dict[str, AnalysisResult]:
    """Run the selected analyses and save them under ``out``; returns the results.

    ``bn_reestimate=None`` re-estimates BatchNorm statistics at every weight-space point
    whenever the models have BatchNorm (extrapolated running variances are meaningless).
    """
    pt, rit = roles(ctx, inits)
    if not pt and not rit:
        raise ConfigError("papers 003/004 need models of the source architecture trained "
                          "from 'imagenet' (P-T) or 'random' (RI-T) init")
    label = {**{n: f"P-T #{i + 1}" for i, n in enumerate(pt)},
             **{n: f"RI-T #{i + 1}" for i, n in enumerate(rit)}}
    models = {label[n]: ctx.targets[n] for n in pt + rit}
    data = ctx.target_data
    size = ctx.image_size
    first = next(iter(models.values()))
    if bn_reestimate is None:
        from transferscope.engine.batchnorm import bn_layers

        bn_reestimate = bool(bn_layers(first))
    inits_state = {label[n]: load_run(run_dirs[n], "init").state_dict() for n in pt + rit
                   if n in run_dirs}
    pairs = [p for p in [("P-T #1", "P-T #2"), ("RI-T #1", "RI-T #2"), ("P-T #1", "RI-T #1"),
                         ("P-T #2", "RI-T #2")] if p[0] in models and p[1] in models]
    key = {"models": {k: m.weights_hash() for k, m in models.items()},
           "source": ctx.source.weights_hash(), "data": data.digest, "size": size,
           "batch": ctx.batch_size,  # BatchNorm re-estimation averages per-batch statistics
           "inits": {k: tensors_sha256(v) for k, v in inits_state.items()}, "seed": seed,
           "lambdas": list(map(float, lambdas)), "bn": bn_reestimate,
           "criticality": [criticality_images, criticality_modules, CRITICALITY_ALPHAS,
                           CRITICALITY_SIGMAS, CRITICALITY_DRAWS, "loss on train",
                           getattr(ctx, "target_train_data", None) is not None and
                           ctx.target_train_data.digest],
           "basins": [BASIN_SAMPLES, BASIN_PAIRS, list(basins.DEFAULT_DELTAS)]}

    @functools.cache
    def batches():  # decoded once, only if some analysis is not cached
        return list(torch.utils.data.DataLoader(
            data.with_transform(eval_transform(ctx.source.norm, size)),
            batch_size=ctx.batch_size))

    reest = (lambda: batches()) if bn_reestimate else (lambda: None)

    def do_mistakes():
        preds = {k: (ctx.predict(m, data).preds, data.targets) for k, m in models.items()}
        return mistakes.run(preds, class_names=data.classes)

    def do_cka():
        cka_models = {"P": ctx.source, **models}
        cka_pairs = [p for p in [("P-T #1", "P")] + pairs if p[0] in cka_models]
        res = cka.run(cka_models, batches(), cka_pairs, pool="avg")
        res.notes.append("Activations are averaged over space per channel (pool='avg') so "
                         "every layer fits the streaming accumulator.")
        return res

    def do_distances():  # paper 003 Table 2: 2 P-T, 2 RI-T, P-T & P, RI-T & P
        with_p = [(k, "P") for k in models if k.endswith("#1")]
        states = {**{k: m.state_dict() for k, m in models.items()},
                  "P": ctx.source.state_dict()}
        return distances.run(states, first, init=inits_state or None,
                             pairs=(pairs or []) + with_p, head_mismatch="skip")

    def do_barriers():
        named = {f"{a} - {b}": (models[a].state_dict(), models[b].state_dict())
                 for a, b in pairs[:2]}
        return barriers.run(first, named, batches(), list(lambdas),
                            bn_reestimate_loader=reest(), bn_reestimate=bn_reestimate)

    @functools.cache
    def subset():  # a seeded sample across classes (the data set is sorted by class)
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        return list(torch.utils.data.DataLoader(
            data.subset(sorted(pick[:criticality_images].tolist())).with_transform(
                eval_transform(ctx.source.norm, size)), batch_size=ctx.batch_size))

    @functools.cache
    def train_subset():  # Definition 3.2 uses the training loss: training images if known
        train = getattr(ctx, "target_train_data", None)
        if train is None:
            return subset()
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        return list(torch.utils.data.DataLoader(
            train.subset(sorted(pick[:criticality_images].tolist())).with_transform(
                eval_transform(ctx.source.norm, size)), batch_size=ctx.batch_size))

    def do_basins():
        hulls = {kind: {n: models[n].state_dict() for n in (f"{kind} #1", f"{kind} #2")}
                 for kind in ("P-T", "RI-T") if f"{kind} #2" in models}
        parts = {kind: basins.run(first, sols, subset(), num_samples=BASIN_SAMPLES,
                                  num_pairs=BASIN_PAIRS, seed=seed,
                                  bn_reestimate_loader=subset() if bn_reestimate else None,
                                  bn_reestimate=bn_reestimate)
                 for kind, sols in hulls.items()}
        res = _merge("basins", parts)
        res.notes.append(f"Estimated on {criticality_images} seeded validation images.")
        return res

    def do_criticality():
        groups = [g.name for g in first.layer_groups()]
        step = max(1, len(groups) // criticality_modules)
        chosen = groups[::step][:criticality_modules - 1] + [groups[-1]]
        crit = {name: criticality.run(first, inits_state[name], models[name].state_dict(),
                                      train_subset(), modules=chosen,
                                      alphas=CRITICALITY_ALPHAS, sigmas=CRITICALITY_SIGMAS,
                                      samples=CRITICALITY_DRAWS, seed=seed, metric="loss",
                                      bn_reestimate_loader=train_subset() if bn_reestimate
                                      else None, bn_reestimate=bn_reestimate)
                for name in ("P-T #1", "RI-T #1") if name in models and name in inits_state}
        return _merge("criticality", crit)

    def do_spectra():
        named = {"P": ctx.source, **{k: v for k, v in models.items() if k.endswith("#1")}}
        return spectra.run(named, size)

    plan = {"mistakes": (do_mistakes, True), "cka": (do_cka, True),
            "distances": (do_distances, len(models) >= 2), "barriers": (do_barriers, bool(pairs)),
            "basins": (do_basins, any(f"{k} #2" in models for k in ("P-T", "RI-T"))),
            "criticality": (do_criticality, bool(inits_state)), "spectra": (do_spectra, True)}
    results: dict[str, AnalysisResult] = {}
    for name, (compute, applicable) in plan.items():
        if name in analyses and applicable:
            log(f"[bold]analysis[/bold] {name}")
            results[name] = cached_analysis(ctx.cache, out, name, key, compute)
    return results


def cached_analysis(cache, out: str | Path, name: str, key: dict, compute) -> AnalysisResult:
    """Run ``compute()`` once per ``key``: its JSON, CSVs and figures are kept in the cache
    and copied into ``out`` on later calls (a damaged entry is recomputed)."""
    digest = cache.key(kind="analysis", name=name, **key)
    entry = cache.root / "analyses" / digest
    if cache.enabled and (entry / "DONE").exists():
        try:
            res = AnalysisResult.load(entry / "results" / f"{name}.json")
            for sub in ("results", "figures"):
                for f in (entry / sub).glob(f"{name}*"):
                    (Path(out) / sub).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, Path(out) / sub / f.name)
            cache.hits += 1
            return res
        except (OSError, ValueError, KeyError):
            shutil.rmtree(entry, ignore_errors=True)
    cache.misses += 1
    res = compute()
    res.save(out)
    if cache.enabled:
        shutil.rmtree(entry, ignore_errors=True)
        for sub in ("results", "figures"):
            for f in (Path(out) / sub).glob(f"{name}*"):
                (entry / sub).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, entry / sub / f.name)
        (entry / "DONE").write_text(name)
    return res


def _merge(name: str, parts: dict[str, AnalysisResult]) -> AnalysisResult:
    """One result from per-model results (tables get a ``model`` column)."""
    import pandas as pd

    tables: dict[str, list] = {}
    for model, res in parts.items():
        for key, df in res.tables.items():
            tables.setdefault(key, []).append(df.assign(model=model))
    merged = AnalysisResult(name, {m: r.summary for m, r in parts.items()},
                            {k: pd.concat(v, ignore_index=True) for k, v in tables.items()})
    for model, res in parts.items():
        merged.figures.update({f"{k}_{model.replace(' ', '').replace('#', '')}": f
                               for k, f in res.figures.items()})
        merged.notes += [f"{model}: {n}" for n in res.notes]
    return merged

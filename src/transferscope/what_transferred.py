"""Papers 003/004 end to end: compare models fine-tuned from pre-trained weights (P-T) with
models trained from random init (RI-T), two instances of each, plus the pre-trained model P.

Runs mistakes, CKA, parameter distances, performance barriers, module criticality and conv
spectra on the target validation images; predictions come from the shared cache and the image
batches are decoded once and reused by every weight-space analysis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from transferscope._progress import log
from transferscope.analyses import barriers, cka, criticality, distances, mistakes, spectra
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.context import AuditContext
from transferscope.data import eval_transform
from transferscope.engine import load_run
from transferscope.errors import ConfigError

WHAT_ANALYSES = ("mistakes", "cka", "distances", "barriers", "criticality", "spectra")


def roles(ctx: AuditContext, inits: dict[str, str]) -> tuple[list[str], list[str]]:
    """Names of the P-T and RI-T models: same architecture as the source, by their init."""
    same = [n for n, m in ctx.targets.items() if m.arch == ctx.source.arch]
    pt = [n for n in same if inits.get(n) == "imagenet"]
    rit = [n for n in same if inits.get(n) == "random"]
    return pt, rit


def run_what_transferred(ctx: AuditContext, out: str | Path, inits: dict[str, str],
                         run_dirs: dict[str, Path], analyses=WHAT_ANALYSES, *,
                         lambdas=tuple(np.linspace(-1, 2, 13)), bn_reestimate: bool = False,
                         criticality_images: int = 64, criticality_modules: int = 6,
                         seed: int = 0) -> dict[str, AnalysisResult]:
    """Run the selected analyses and save them under ``out``; returns the results."""
    pt, rit = roles(ctx, inits)
    if not pt and not rit:
        raise ConfigError("papers 003/004 need models of the source architecture trained "
                          "from 'imagenet' (P-T) or 'random' (RI-T) init")
    label = {**{n: f"P-T #{i + 1}" for i, n in enumerate(pt)},
             **{n: f"RI-T #{i + 1}" for i, n in enumerate(rit)}}
    models = {label[n]: ctx.targets[n] for n in pt + rit}
    data = ctx.target_data
    size = ctx.image_size
    batches = list(torch.utils.data.DataLoader(
        data.with_transform(eval_transform(ctx.source.norm, size)), batch_size=ctx.batch_size))
    first = next(iter(models.values()))
    inits_state = {label[n]: load_run(run_dirs[n], "init").state_dict() for n in pt + rit
                   if n in run_dirs}
    results: dict[str, AnalysisResult] = {}
    pairs = [p for p in [("P-T #1", "P-T #2"), ("RI-T #1", "RI-T #2"), ("P-T #1", "RI-T #1"),
                         ("P-T #2", "RI-T #2")] if p[0] in models and p[1] in models]
    if "mistakes" in analyses:
        log("[bold]analysis[/bold] mistakes")
        preds = {k: (ctx.predict(m, data).preds, data.targets) for k, m in models.items()}
        results["mistakes"] = mistakes.run(preds, class_names=data.classes)
    if "cka" in analyses:
        log("[bold]analysis[/bold] cka")
        cka_models = {"P": ctx.source, **models}
        cka_pairs = [p for p in [("P-T #1", "P")] + pairs if p[0] in cka_models]
        results["cka"] = cka.run(cka_models, batches, cka_pairs, pool="avg")
        results["cka"].notes.append("Activations are averaged over space per channel "
                                    "(pool='avg') so every layer fits the streaming accumulator.")
    if "distances" in analyses and len(models) >= 2:
        log("[bold]analysis[/bold] distances")
        states = {k: m.state_dict() for k, m in models.items()}
        results["distances"] = distances.run(states, first, init=inits_state or None,
                                             pairs=pairs or None)
    reest = batches if bn_reestimate else None
    if "barriers" in analyses and pairs:
        log("[bold]analysis[/bold] barriers")
        named = {f"{a} - {b}": (models[a].state_dict(), models[b].state_dict())
                 for a, b in pairs[:2]}
        results["barriers"] = barriers.run(first, named, batches, list(lambdas),
                                           bn_reestimate_loader=reest)
    if "criticality" in analyses and inits_state:
        log("[bold]analysis[/bold] criticality")
        subset = _take(batches, criticality_images)
        groups = [g.name for g in first.layer_groups()]
        step = max(1, len(groups) // criticality_modules)
        chosen = groups[::step][:criticality_modules - 1] + [groups[-1]]
        crit = {}
        for name in [n for n in ("P-T #1", "RI-T #1") if n in models and n in inits_state]:
            crit[name] = criticality.run(first, inits_state[name], models[name].state_dict(),
                                         subset, modules=chosen, alphas=(0.0, 0.5, 1.0),
                                         sigmas=(0.0, 0.5, 1.0), samples=1, seed=seed,
                                         bn_reestimate_loader=reest)
        results["criticality"] = _merge("criticality", crit)
    if "spectra" in analyses:
        log("[bold]analysis[/bold] spectra")
        named = {"P": ctx.source, **{k: v for k, v in models.items() if k.endswith("#1")}}
        results["spectra"] = spectra.run(named, size)
    for res in results.values():
        res.save(out)
    return results


def _take(batches, n):
    out, seen = [], 0
    for x, y in batches:
        if seen >= n:
            break
        out.append((x[: n - seen], y[: n - seen]))
        seen += len(out[-1][1])
    return out


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

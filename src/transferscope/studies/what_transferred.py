"""Papers 003/004 end to end: compare models fine-tuned from pre-trained weights (P-T) with
models trained from random init (RI-T), two instances of each, plus the pre-trained model P.

Runs mistakes, CKA, parameter distances, performance barriers, basins (Definition 3.1, for the
hull of the two P-T and of the two RI-T solutions), module criticality and conv
spectra on the target validation images; predictions come from the shared cache and the image
batches are decoded once and reused by every weight-space analysis.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from transferscope._progress import log
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import (get_analysis, list_analyses, run_analysis,
                                              validate_options)
from transferscope.analyses._transfer import cache_key, transfer_inputs
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError
from transferscope.studies.memory import record_seconds


def transfer_options(lambdas=None, bn_reestimate: bool | None = None, criticality_images: int = 64,
                     criticality_modules: int = 6, seed: int = 0) -> dict[str, dict]:
    """Options of the what-is-transferred analyses from a study's ``transfer_options``."""
    shared = {"bn_reestimate": bn_reestimate}
    return {"barriers": {**shared, **({"lambdas": list(lambdas)} if lambdas is not None
                                      else {})},
            "basins": {**shared, "images": criticality_images, "seed": seed},
            "criticality": {**shared, "images": criticality_images,
                            "modules": criticality_modules, "seed": seed}}


def run_what_transferred(ctx: AuditContext, out: str | Path, analyses=None,
                         options: dict[str, dict] | None = None) -> dict[str, AnalysisResult]:
    """Run the selected analyses of the what-is-transferred section (default: all) on the
    P-T / RI-T models of ``ctx`` (their roles come from ``ctx.entries``), save them under
    ``out`` and return them; each result is cached under its inputs and options."""
    known = list_analyses("what_transferred", runnable=True)
    names = known if analyses is None else list(analyses)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown analyses {unknown}; known: {', '.join(known)}")
    opts = {n: validate_options(n, (options or {}).get(n)).model_dump() for n in names}
    transfer_inputs(ctx)  # ConfigError without P-T / RI-T models
    base = cache_key(ctx)
    results: dict[str, AnalysisResult] = {}
    timings = {}
    for name in names:
        if not get_analysis(name).applicable(ctx):
            continue
        log(f"[bold]analysis[/bold] {name}")
        t0 = time.perf_counter()
        results[name] = cached_analysis(ctx.cache, out, name, {**base, "options": opts[name]},
                                        lambda name=name: run_analysis(name, ctx, opts[name]))
        timings[name] = time.perf_counter() - t0
    record_seconds(out, timings)
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

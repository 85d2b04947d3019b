"""Running the source-domain memory audit (papers 000/001) end to end.

Every analysis gets the same :class:`AuditContext`, so each (model, data) forward pass runs
once and is shared through the cache; composites, occlusion, distraction and the detector's
composite evaluation share one composite plan.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transferscope._io import atomic_write_json
from transferscope._lock import writer_lock
from transferscope._progress import log
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import (get_analysis, list_analyses, run_analysis,
                                              validate_options)
from transferscope.analyses.composites import CompositeOptions
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError

RUN_STATS = "run_stats.json"  # volatile: seconds per analysis and cache hits of the last run


def composite_users(names: list[str]) -> list[str]:
    """The analyses among ``names`` whose options are a composite plan's (they share it)."""
    return [n for n in names if issubclass(get_analysis(n).options, CompositeOptions)]


def audit_options(names: list[str], params: dict[str, dict] | None = None,
                  composite_params: dict | None = None) -> dict[str, dict]:
    """Validated options of every analysis in ``names``: ``params[name]``, plus the shared
    composite plan's settings for the analyses that use composites (the detector then also
    evaluates on those composites)."""
    params = {k: dict(v) for k, v in (params or {}).items()}
    comp = dict(composite_params or {})
    users = composite_users(names)
    for name in users:
        params.setdefault(name, {}).update(comp)
    if "interference_detector" in names and users:
        params.setdefault("interference_detector", {})["composites"] = comp
    return {n: validate_options(n, params.get(n)).model_dump() for n in names}


def run_memory_audit(ctx: AuditContext, out_dir: str | Path, analyses: list[str] | None = None,
                     params: dict[str, dict] | None = None,
                     composite_params: dict | None = None) -> dict[str, AnalysisResult]:
    """:func:`_run_memory_audit` holding ``out_dir``'s writer lock: a second audit into the
    same folder waits for the first (or fails naming it with ``TRANSFERSCOPE_NO_WAIT=1``)."""
    with writer_lock(out_dir, f"memory audit into {out_dir}"):
        return _run_memory_audit(ctx, out_dir, analyses, params, composite_params)


def _run_memory_audit(ctx: AuditContext, out_dir: str | Path, analyses: list[str] | None = None,
                      params: dict[str, dict] | None = None,
                      composite_params: dict | None = None) -> dict[str, AnalysisResult]:
    """Run the selected registered analyses (default: the memory section), write
    ``out_dir/results`` and ``figures``.

    Everything under ``results/`` depends only on the inputs (models, data, settings): the
    same audit run twice writes byte-identical JSON and CSV there. What varies from run to run
    (seconds per analysis, cache hits and misses) goes to ``out_dir/run_stats.json``.
    ``results/index.json`` lists the models, data digests and every skipped input file.

    ``params[name]`` are that analysis' options; ``composite_params`` (style,
    overlays_per_class, repeats, seed, ...) are shared by every analysis that uses composites.
    """
    names = list_analyses("memory") if analyses is None else list(analyses)
    runnable = list_analyses(runnable=True)
    unknown = [n for n in names if n not in runnable]
    if unknown:
        raise ConfigError(f"unknown analyses {unknown}; known: {', '.join(runnable)}")
    options = audit_options(names, params, composite_params)  # all fail before any runs
    out_dir = Path(out_dir)
    results, timings, before = {}, {}, ctx.cache.stats()
    if {"retained_knowledge", "interference_bias", "agreement"} & set(names):
        log("[bold]source images[/bold]: logits of every model, one decoding pass per set")
        t0 = time.perf_counter()
        ctx.prefetch_source_logits()
        timings["shared source-image pass"] = round(time.perf_counter() - t0, 3)
    for name in names:
        log(f"[bold]analysis[/bold] {name}")
        t0 = time.perf_counter()
        results[name] = run_analysis(name, ctx, options[name])
        results[name].save(out_dir)
        timings[name] = round(time.perf_counter() - t0, 3)
    atomic_write_json(out_dir / RUN_STATS, {
        "seconds": timings, "cache": {k: v - before[k] for k, v in ctx.cache.stats().items()}})
    atomic_write_json(out_dir / "results" / "index.json", {
        "analyses": names, "image_size": ctx.image_size,
        "models": {k: {"arch": m.arch, "weights_sha256": m.weights_hash()}
                   for k, m in {"source": ctx.source, **ctx.targets}.items()},
        "target_data": {"root": str(ctx.target_data.root), "digest": ctx.target_data.digest},
        "source_data": {k: {"root": str(d.root), "digest": d.digest, "images": len(d)}
                        for k, d in ctx.source_data.items()},
        "skipped_files": [s.__dict__ for s in ctx.target_data.skipped] + [
            s.__dict__ for d in ctx.source_data.values() for s in d.skipped]})
    return results


def record_seconds(out_dir: str | Path, timings: dict[str, float]) -> None:
    """Add analyses' wall seconds to ``out_dir/run_stats.json`` (what varies between runs)."""
    path = Path(out_dir) / RUN_STATS
    stats = json.loads(path.read_text()) if path.is_file() else {"seconds": {}}
    stats.setdefault("seconds", {}).update({k: round(v, 3) for k, v in timings.items()})
    atomic_write_json(path, stats)


def summary_json(results: dict[str, AnalysisResult]) -> str:
    return json.dumps({k: r.summary for k, r in results.items()}, indent=2, default=str)

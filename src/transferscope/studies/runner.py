"""The one runner of registered analyses: every study kind and command goes through
:func:`run_analyses` - options validated before anything runs, analyses that do not apply to
the context skipped (and named), the shared source-image pass done once, results of the
weight-space analyses cached by inputs, options and code, timings and cache use recorded.

Example:
    >>> from transferscope.studies.runner import analysis_options
    >>> analysis_options(["barriers"], {"barriers": {"lambdas": [0.0, 1.0]}})["barriers"]["lambdas"]
    [0.0, 1.0]
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import time
from pathlib import Path

from transferscope._io import atomic_write_json
from transferscope._progress import log
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import (get_analysis, list_analyses, run_analysis,
                                              validate_options)
from transferscope.analyses.composites import CompositeOptions
from transferscope.errors import ConfigError, did_you_mean

__all__ = ["analysis_options", "cached_analysis", "CACHED_SECTIONS", "check_names", "code_digest",
           "composite_users", "run_analyses", "RUN_STATS", "write_index"]

RUN_STATS = "run_stats.json"  # volatile: seconds per analysis and cache hits of the last run
CACHED_SECTIONS = ("what_transferred",)  # results cached whole (their inputs are weights)


def check_names(names: list[str]) -> None:
    """Unknown analysis names fail with "did you mean" and the known ones."""
    runnable = list_analyses(runnable=True)
    for n in names:
        if n not in runnable:
            raise ConfigError(f"unknown analysis {n!r}{did_you_mean(n, runnable)}; known: "
                              f"{', '.join(runnable)} (`transferscope analyses`)")


def composite_users(names: list[str]) -> list[str]:
    """The analyses among ``names`` whose options are a composite plan's (they share it)."""
    return [n for n in names if issubclass(get_analysis(n).options, CompositeOptions)]


def analysis_options(names: list[str], options: dict[str, dict] | None = None,
                     composite_params: dict | None = None) -> dict[str, dict]:
    """Validated options of every analysis in ``names``: the shared composite plan's settings
    for the analyses that use composites (the detector then also evaluates on those
    composites), overridden by ``options[name]``. Every error is raised before any analysis
    runs."""
    comp = dict(composite_params or {})
    users = composite_users(names)
    params: dict[str, dict] = {}
    for name in users:
        params[name] = dict(comp)
    for name in names:  # analyses that evaluate on composites take the plan as an option
        if users and name not in users and "composites" in get_analysis(name).options.model_fields:
            params.setdefault(name, {})["composites"] = comp
    for name, given in (options or {}).items():
        params.setdefault(name, {}).update(given or {})
    return {n: validate_options(n, params.get(n)).model_dump() for n in names}


def code_digest(name: str) -> str:
    """Hash of the source of analysis ``name``'s module: a cached result of an older version of
    the analysis is never served."""
    module = inspect.getmodule(get_analysis(name).run)
    try:
        text = inspect.getsource(module) if module else name
    except (OSError, TypeError):
        text = name
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def run_analyses(ctx, names: list[str], out: str | Path, options: dict[str, dict] | None = None,
                 *, composite_params: dict | None = None,
                 cached_sections: tuple[str, ...] = CACHED_SECTIONS,
                 force: tuple[str, ...] | set[str] = ()) -> dict[str, AnalysisResult]:
    """Run registered analyses ``names`` on ``ctx``, save each under ``out`` and return them.

    ``options[name]`` are that analysis's options (the study file's
    ``[analyses.options.<name>]``), ``composite_params`` the shared composite plan's settings.
    Analyses whose ``applicable(ctx)`` is false are skipped and listed in
    ``results/index.json``; those in ``force`` (named by the user) run anyway, so their own
    error explains what is missing.
    Everything under ``results/`` depends only on the inputs; seconds and cache use go to
    ``out/run_stats.json``.
    """
    names = list(dict.fromkeys(names))
    check_names(names)
    opts = analysis_options(names, options, composite_params)  # all fail before any runs
    out = Path(out)
    results, timings, skipped, before = {}, {}, [], ctx.cache.stats()
    run = [n for n in names if n in force or get_analysis(n).applicable(ctx)]
    skipped = [n for n in names if n not in run]
    for n in skipped:
        log(f"[bold]analysis[/bold] {n}: skipped (does not apply to these models)")
    if any("source_logits" in get_analysis(n).needs for n in run):
        log("[bold]source images[/bold]: logits of every model, one decoding pass per set")
        t0 = time.perf_counter()
        ctx.prefetch_source_logits()
        timings["shared source-image pass"] = round(time.perf_counter() - t0, 3)
    base = None
    for name in run:
        log(f"[bold]analysis[/bold] {name}")
        t0 = time.perf_counter()
        if get_analysis(name).section in cached_sections:
            if base is None:
                from transferscope.analyses._transfer import cache_key

                base = cache_key(ctx)
            results[name] = cached_analysis(
                ctx.cache, out, name, {**base, "options": opts[name], "code": code_digest(name)},
                lambda name=name: run_analysis(name, ctx, opts[name]))
        else:
            results[name] = run_analysis(name, ctx, opts[name])
            results[name].save(out)
        timings[name] = round(time.perf_counter() - t0, 3)
    atomic_write_json(out / RUN_STATS, {
        "seconds": timings, "cache": {k: v - before[k] for k, v in ctx.cache.stats().items()}})
    write_index(ctx, out, list(results), skipped)
    return results


def write_index(ctx, out: Path, names: list[str], skipped: list[str]) -> None:
    """``results/index.json``: analyses run and skipped, models, data digests, skipped files."""
    atomic_write_json(out / "results" / "index.json", {
        "analyses": names, "skipped_analyses": skipped, "image_size": ctx.image_size,
        "models": {k: {"arch": m.arch, "weights_sha256": m.weights_hash()}
                   for k, m in {"source": ctx.source, **ctx.targets}.items()},
        "target_data": {"root": str(ctx.target_data.root), "digest": ctx.target_data.digest},
        "source_data": {k: {"root": str(d.root), "digest": d.digest, "images": len(d)}
                        for k, d in ctx.source_data.items()},
        "skipped_files": [s.__dict__ for s in ctx.target_data.skipped] + [
            s.__dict__ for d in ctx.source_data.values() for s in d.skipped]})

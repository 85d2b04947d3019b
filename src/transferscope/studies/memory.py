"""Running the source-domain memory audit (papers 000/001) end to end.

Every analysis gets the same :class:`AuditContext`, so each (model, data) forward pass runs
once and is shared through the cache; composites, occlusion, distraction and the detector's
composite evaluation share one composite plan.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferscope._io import atomic_write_json
from transferscope._lock import writer_lock
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import list_analyses
from transferscope.analyses.context import AuditContext

from transferscope.studies.runner import RUN_STATS, analysis_options, run_analyses  # noqa: F401


def audit_options(names: list[str], params: dict[str, dict] | None = None,
                  composite_params: dict | None = None) -> dict[str, dict]:
    """Validated options of every analysis in ``names`` (see
    :func:`transferscope.studies.runner.analysis_options`)."""
    return analysis_options(names, params, composite_params)


def run_memory_audit(ctx: AuditContext, out_dir: str | Path, analyses: list[str] | None = None,
                     params: dict[str, dict] | None = None,
                     composite_params: dict | None = None) -> dict[str, AnalysisResult]:
    """The memory analyses (default: the whole memory section; named ones run even where
    ``applicable`` says no, so their own error explains why) through
    :func:`~transferscope.studies.runner.run_analyses`, holding ``out_dir``'s writer lock: a
    second audit into the same folder waits for the first (or fails naming it with
    ``TRANSFERSCOPE_NO_WAIT=1``).

    Everything under ``results/`` depends only on the inputs (models, data, settings): the
    same audit run twice writes byte-identical JSON and CSV there. What varies from run to run
    (seconds per analysis, cache hits and misses) goes to ``out_dir/run_stats.json``.
    """
    names = list_analyses("memory") if analyses is None else list(analyses)
    with writer_lock(out_dir, f"memory audit into {out_dir}"):
        return run_analyses(ctx, names, out_dir, params, composite_params=composite_params,
                            force=names if analyses is not None else ())


def record_seconds(out_dir: str | Path, timings: dict[str, float]) -> None:
    """Add analyses' wall seconds to ``out_dir/run_stats.json`` (what varies between runs)."""
    path = Path(out_dir) / RUN_STATS
    stats = json.loads(path.read_text()) if path.is_file() else {"seconds": {}}
    stats.setdefault("seconds", {}).update({k: round(v, 3) for k, v in timings.items()})
    atomic_write_json(path, stats)


def summary_json(results: dict[str, AnalysisResult]) -> str:
    return json.dumps({k: r.summary for k, r in results.items()}, indent=2, default=str)

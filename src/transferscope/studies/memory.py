"""Running the source-domain memory audit (papers 000/001) end to end.

Every analysis gets the same :class:`AuditContext`, so each (model, data) forward pass runs
once and is shared through the cache; composites, occlusion, distraction and the detector's
composite evaluation share one composite plan.
"""

from __future__ import annotations

from pathlib import Path

from transferscope._lock import writer_lock
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import MEMORY_SECTIONS, list_analyses
from transferscope.analyses.context import AuditContext
from transferscope.studies.runner import run_analyses

__all__ = ["run_memory_audit"]


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
    names = ([n for section in MEMORY_SECTIONS for n in list_analyses(section)]
             if analyses is None else list(analyses))
    with writer_lock(out_dir, f"memory audit into {out_dir}"):
        return run_analyses(ctx, names, out_dir, params, composite_params=composite_params,
                            force=names if analyses is not None else ())

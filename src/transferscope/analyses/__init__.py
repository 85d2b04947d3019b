"""Analyses: one module per analysis, named as its result, registered with
:func:`register_analysis`; each has pure functions on tensors / state dicts and one
``run(ctx, **options) -> AnalysisResult`` entry (see ``transferscope analyses``)."""

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import (AnalysisOptions, Finding, get_analysis,
                                              list_analyses, register_analysis,
                                              register_section, run_analysis)
from transferscope.analyses.context import AuditContext, ModelEntry

__all__ = ["AnalysisOptions", "AnalysisResult", "AuditContext", "Finding", "ModelEntry",
           "get_analysis", "list_analyses", "register_analysis", "register_section", "run_analysis"]

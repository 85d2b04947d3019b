"""Analyses: one module per analysis, each with ``run(ctx, **params) -> AnalysisResult``."""

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.context import AuditContext

__all__ = ["AnalysisResult", "AuditContext"]

"""Papers 003/004 end to end: compare models fine-tuned from pre-trained weights (P-T) with
models trained from random init (RI-T), two instances of each, plus the pre-trained model P.

Runs mistakes, CKA, parameter distances, performance barriers, basins (Definition 3.1, for the
hull of the two P-T and of the two RI-T solutions), module criticality and conv
spectra on the target validation images; predictions come from the shared cache and the image
batches are decoded once and reused by every weight-space analysis.
"""

from __future__ import annotations

from pathlib import Path

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import get_analysis, list_analyses
from transferscope.analyses._transfer import transfer_inputs
from transferscope.analyses.context import AuditContext
from transferscope.errors import ConfigError
from transferscope.studies.runner import cached_analysis, run_analyses  # noqa: F401

__all__ = ["run_what_transferred", "transfer_options"]


def transfer_options(lambdas=None, bn_reestimate: bool | None = None,
                     criticality_images: int | None = None,
                     criticality_modules: int | None = None,
                     seed: int | None = None) -> dict[str, dict]:
    """Options of the what-is-transferred analyses from a study's ``transfer_options`` (the
    older shorthand): only what it sets; every default lives in the analysis's options model,
    and which analysis reads which key is its options model's ``shorthand``.

    Example:
        >>> transfer_options(criticality_images=16)["criticality"]
        {'images': 16}
        >>> transfer_options()["barriers"]
        {}
    """
    given = {k: v for k, v in dict(lambdas=None if lambdas is None else list(lambdas),
                                   bn_reestimate=bn_reestimate,
                                   criticality_images=criticality_images,
                                   criticality_modules=criticality_modules,
                                   seed=seed).items() if v is not None}
    return {name: {field: given[key] for key, field in options.shorthand.items()
                   if key in given}
            for name in list_analyses() if (options := get_analysis(name).options).shorthand}


def run_what_transferred(ctx: AuditContext, out: str | Path, analyses=None,
                         options: dict[str, dict] | None = None) -> dict[str, AnalysisResult]:
    """Run the selected analyses of the what-is-transferred section (default: all) on the
    P-T / RI-T models of ``ctx`` (their roles come from ``ctx.entries``), save them under
    ``out`` and return them; each result is cached under its inputs, options and code
    (:func:`~transferscope.studies.runner.run_analyses`)."""
    known = list_analyses("what_transferred", runnable=True)
    names = known if analyses is None else list(analyses)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown analyses {unknown}; known: {', '.join(known)}")
    transfer_inputs(ctx)  # ConfigError without P-T / RI-T models
    return run_analyses(ctx, names, out, options)

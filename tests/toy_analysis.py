"""A toy analysis in one file with one registration (the registry test imports it):
the mean top-1 confidence of every target model on the target data."""

from __future__ import annotations

import html

import pandas as pd
from pydantic import Field

from transferscope.analyses import AnalysisOptions, AnalysisResult, Finding, register_analysis


class ToyOptions(AnalysisOptions):
    decimals: int = Field(3, ge=0, le=8, description="rounding of the table")


def finding(result: AnalysisResult) -> Finding:
    parts = [f"{html.escape(k)} {v:.2f}" for k, v in result.summary.items()]
    return Finding.from_html("<b>Toy confidence</b>: " + "; ".join(parts) + ".", dict(result.summary))


@register_analysis("toy_confidence", title="Toy: mean top-1 confidence", paper="paper 000 (toy)",
                   section="memory", options=ToyOptions, finding=finding,
                   resolution=lambda res, results: [f"Resolution: toy over {len(res.summary)} "
                                                    "models."],
                   drill=(dict(widget="bars", table="confidence", value="mean confidence",
                               heading="Toy: confidence of each model"),))
def run(ctx, decimals: int = 3) -> AnalysisResult:
    conf = {k: float(ctx.predict(m, ctx.target_data).probs.max(1).values.mean())
            for k, m in ctx.targets.items()}
    return AnalysisResult("toy_confidence", conf, {"confidence": pd.DataFrame(
        [{"model": k, "mean confidence": round(v, decimals)} for k, v in conf.items()])})

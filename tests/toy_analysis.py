"""A toy analysis in one file with one registration (the registry test imports it):
the mean top-1 confidence of every target model on the target data, with an option a study
file sets (``[analyses.options.toy_confidence]``), an interactive chart, a resolution note
and a drill-down panel - nothing outside this file names it."""

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
                               heading="Toy: confidence of each model"),),
                   charts={"confidence": dict(kind="heatmap", rows="model", cols="data",
                                              value="mean confidence")})
def run(ctx, *, decimals: int) -> AnalysisResult:  # its default: ToyOptions, the one home
    conf = {k: float(ctx.predict(m, ctx.target_data).probs.max(1).values.mean())
            for k, m in ctx.targets.items()}
    return AnalysisResult("toy_confidence", conf, {"confidence": pd.DataFrame(
        [{"model": k, "data": "target", "mean confidence": round(v, decimals)}
         for k, v in conf.items()])})

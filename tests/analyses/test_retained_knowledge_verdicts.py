"""Retained knowledge (paper 000, Table 1): intervals over source classes, models compared on
the same classes as pairs, and the claim tested against a from-scratch backbone or chance."""

from __future__ import annotations

import json

import numpy as np
import torch

from transferscope.analyses import retained_knowledge as retained
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import finding_of
from transferscope.analyses.context import ModelEntry
from transferscope.stats import Verdict

from test_memory_analyses import audit  # noqa: F401  (fixture)

S = 100
ST = "ft + source head (M^st)"
SCRATCH = "scratch + source head (M^st)"


def _result(recalls: dict, roles: dict) -> AnalysisResult:
    present = torch.arange(S)
    summary = {f"samples/{k}": retained.recall_summary(torch.as_tensor(r, dtype=torch.float64),
                                                        present, roles[k])
               for k, r in recalls.items()}
    summary.update(retained.paired_recalls("samples", {k: torch.as_tensor(r) for k, r in
                                                       recalls.items()}))
    return AnalysisResult("retained_knowledge", summary)


def test_against_chance_without_a_from_scratch_backbone():
    rng = np.random.default_rng(0)
    f = finding_of(_result({ST: rng.uniform(0.2, 0.6, S)}, {ST: "fine-tuned"}))
    (check,) = f.checks  # the old finding tested nothing
    assert check.claim == "000.retained" and check.verdict is Verdict.AGREES
    assert "chance" in check.why and check.estimate.unit == "source class"
    assert check.estimate.n == S
    json.dumps(f.to_dict())
    # a head that ignores the image (one constant class): mean per-class recall is exactly 1/S
    const = np.zeros(S)
    const[3] = 1.0
    check = finding_of(_result({ST: const}, {ST: "fine-tuned"})).checks[0]
    assert check.verdict is not Verdict.AGREES
    assert check.estimate.value == 1 / S


def test_paired_against_a_from_scratch_backbone_on_the_same_classes():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.0, 0.9, S)  # classes differ a lot, the difference is steady
    res = _result({ST: base + 0.05, SCRATCH: base}, {ST: "fine-tuned", SCRATCH: "scratch"})
    s = res.summary
    a, b = s[f"samples/{ST}"]["mean_recall_iv"], s[f"samples/{SCRATCH}"]["mean_recall_iv"]
    assert a["lo"] < b["hi"]  # the unpaired intervals overlap ...
    check = finding_of(res).checks[0]
    assert check.verdict is Verdict.AGREES  # ... the paired difference does not include 0
    assert "from-scratch" in check.why and check.estimate.value > 0
    same = _result({ST: base, SCRATCH: base}, {ST: "fine-tuned", SCRATCH: "scratch"})
    assert finding_of(same).checks[0].verdict is Verdict.CANNOT_TELL
    worse = _result({ST: base, SCRATCH: base + 0.05}, {ST: "fine-tuned", SCRATCH: "scratch"})
    assert finding_of(worse).checks[0].verdict is Verdict.CONTRADICTS


def test_run_pairs_models_and_takes_roles_from_the_entries(audit):
    audit.entries["scratch"] = ModelEntry("scratch", "scratch", audit.targets["scratch"].arch)
    res = retained.run(audit)
    paired = res.summary["paired/samples"]
    assert "fine-tuned + source head (M^st) vs scratch + source head (M^st)" in paired
    assert all(c["difference"]["unit"] == "source class" for c in paired.values())
    assert res.summary["samples/scratch + source head (M^st)"]["role"] == "RI-T"
    f = finding_of(res)
    assert f.checks[0].verdict is Verdict.CANNOT_TELL  # identical backbones: no difference
    assert f.text.startswith("Retained knowledge: with the source head put back")

"""The report's top: smoke banner, "what this means" summary, claims table, glossary, and
results/findings.json (issues 26 and 27)."""

from __future__ import annotations

import json

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import register_analysis, unregister_analysis
from transferscope.findings import CLAIMS, ClaimCheck, Finding, claims_table
from transferscope.report import Report, write_report
from transferscope.stats import Interval, Verdict


def _finding(result):
    iv = Interval(0.12, 0.05, 0.2, "background image", 20)
    return Finding("Toy distraction", "fine-tuned minus scratch IoU on M^st maps",
                   clauses=("ft 0.42", "scratch <b>0.30</b>"), estimates=(("ft - scratch", iv),),
                   checks=(ClaimCheck("001.distraction", Verdict.AGREES, "interval above 0", iv,
                                      "paired cluster bootstrap"),),
                   next_step="try transferscope remedies")


def test_report_top_and_findings_json(tmp_path):
    register_analysis("toy_distraction", title="Toy", paper="paper 001", section="memory",
                      run=lambda ctx: None, finding=_finding)
    try:
        res = AnalysisResult("toy_distraction", {"x": 1})
        res.save(tmp_path)
        page = write_report(tmp_path, {"toy_distraction": res},
                            spec_text="# --quick variant of this study\nname='x'").read_text()
        assert "Smoke-test run" in page and "What this means for your model" in page
        assert "try transferscope remedies" in page and "<b>0.30</b>" not in page
        assert "The papers&#x27; claims on your data" in page or "claims on your data" in page
        assert "M^st" in page and "Glossary" in page and "fine-tuned backbone with the source" \
            in page
        doc = json.loads((tmp_path / "results" / "findings.json").read_text())
        assert doc["findings"][0]["checks"][0]["verdict"] == "agrees"
        assert doc["findings"][0]["estimates"][0]["unit"] == "background image"
        assert len(doc["claims"]) == len(CLAIMS)
        untested = [c for c in doc["claims"] if c["claim"] == "003.mistakes"][0]
        assert untested["verdict"] == "not tested" and "did not run" in untested["why"]
        found = Report.from_dir(tmp_path).findings()
        assert found[0].checks[0].claim == "001.distraction"
        assert "findings" not in Report.from_dir(tmp_path).results  # not an analysis
        plain = write_report(tmp_path, {"toy_distraction": res}, spec_text="name='x'")
        assert "Smoke-test run" not in plain.read_text()
    finally:
        unregister_analysis("toy_distraction")


def test_claims_table_lists_every_claim_once():
    rows = claims_table([])
    assert [r["claim"] for r in rows] == [c.key for c in CLAIMS]
    assert all(r["verdict"] == "not tested" for r in rows)

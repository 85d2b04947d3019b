"""`transferscope check`: known results folders, PASS / FAIL / ERROR per checked key, exit codes,
JUnit XML read back by a JUnit parser, the examples' rules against a quick demo's keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from transferscope.errors import ConfigError
from transferscope.studies.check import check, parse_rule, read_rules, rules_from_table

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _iv(label, value, lo, hi, unit="background image", n=20):
    return {"label": label, "value": value, "lo": lo, "hi": hi, "unit": unit, "n": n,
            "level": 0.95, "method": "cluster bootstrap"}


def fake_results(out: Path, rules: str = "") -> Path:
    """A results folder with known numbers, estimates and claims."""
    (out / "results").mkdir(parents=True)
    doc = {"findings": [
        {"analysis": "retained_knowledge", "numbers": {
            "source efficientnet_lite0 (M^s)": 666, "fine-tuned + source head (M^st)": 354,
            "fine-tuned-2 + source head (M^st)": 90}, "estimates": []},
        {"analysis": "distraction", "numbers": {"fine-tuned": 0.24},
         "estimates": [_iv("fine-tuned", 0.24, 0.18, 0.31), _iv("scratch", 0.16, 0.1, 0.2)]},
        {"analysis": "composites", "numbers": {"fine-tuned": {"clean": 0.84, "against": 0.37}},
         "estimates": [_iv("fine-tuned: clean", float("nan"), None, None)]}],
        "claims": [{"claim": "001.distraction", "verdict": "cannot tell", "why": "too few"},
                   {"claim": "000.retained", "verdict": "agrees", "why": ""}]}
    (out / "results" / "findings.json").write_text(json.dumps(doc))
    if rules:
        (out / "study.toml").write_text(rules)
    return out


def test_value_and_claim_rules_known_answers(tmp_path):
    out = fake_results(tmp_path / "s")
    rules = [parse_rule("retained_knowledge:number:*M^st*>=100"),
             parse_rule("distraction:estimate:fine-tuned<=0.3"),
             parse_rule("distraction:estimate.hi:fine-tuned<=0.3"),
             parse_rule("composites:number:fine-tuned.against>=0.37"),  # a tie passes
             parse_rule("claim:001.distraction!=contradicts"),
             parse_rule("claim:000.retained==contradicts")]
    res = check(out, rules)
    got = [(o.name, o.status) for o in res.outcomes]
    assert got == [
        ("retained_knowledge number '*M^st*' [fine-tuned + source head (M^st)]", "PASS"),
        ("retained_knowledge number '*M^st*' [fine-tuned-2 + source head (M^st)]", "FAIL"),
        ("distraction estimate 'fine-tuned' [fine-tuned]", "PASS"),
        ("distraction estimate 'fine-tuned' [fine-tuned]", "FAIL"),  # upper bound 0.31
        ("composites number 'fine-tuned.against' [fine-tuned.against]", "PASS"),
        ("claim 001.distraction", "PASS"), ("claim 000.retained", "FAIL")]
    assert res.outcomes[3].line.endswith(
        "0.24 [0.18, 0.31] (95 %, 20 background images): upper bound 0.31 violates <= 0.3")
    assert "point estimate 0.24 meets <= 0.3" in res.outcomes[2].line
    assert "value (no interval) 90 violates >= 100" in res.outcomes[1].line
    assert res.exit_code == 1 and not res.passed


def test_rules_that_cannot_be_evaluated_are_errors_never_silent_passes(tmp_path):
    out = fake_results(tmp_path / "s")
    res = check(out, [parse_rule("distracton:number:*>=0"),
                      parse_rule("retained_knowledge:number:*M^t*>=1"),
                      parse_rule("composites:estimate:fine-tuned: clean>=0.5"),
                      parse_rule("claim:001.distractoin!=contradicts")])
    assert [o.status for o in res.outcomes] == ["ERROR"] * 4
    lines = res.lines()
    assert "did you mean 'distraction'" in lines[0]
    assert "matches no key" in lines[1] and "fine-tuned + source head (M^st)" in lines[1]
    assert "not a finite number" in lines[2]
    assert "did you mean '001.distraction'" in lines[3]
    assert res.exit_code == 2


def test_cli_exit_codes_junit_and_json(tmp_path, capsys):
    from junitparser import Error, Failure, JUnitXml

    from transferscope.cli import main

    out = fake_results(tmp_path / "s", rules='[[check]]\nname = "keeps ImageNet"\n'
                       'analysis = "retained_knowledge"\nnumber = "fine-tuned +*"\nmin = 100\n')
    assert main(["check", str(out)]) == 0  # the study file's own [[check]]
    assert capsys.readouterr().out.splitlines()[0].startswith("PASS  keeps ImageNet [")
    junit, summary = tmp_path / "r.xml", tmp_path / "r.json"
    rc = main(["check", str(out), "--rule", "retained_knowledge:number:*M^st*>=100",
               "--rule", "nothing:number:*>=1", "--junit", str(junit), "--json", str(summary)])
    printed = capsys.readouterr().out.splitlines()
    assert rc == 2 and printed[-1] == "1 of 3 checks passed, 1 failed, 1 could not be evaluated"
    xml = JUnitXml.fromfile(str(junit))
    suite = next(iter(xml))  # <testsuites> holding one <testsuite>
    cases = list(suite)
    assert (suite.tests, suite.failures, suite.errors) == (3, 1, 1)
    kinds = [type(c.result[0]).__name__ if c.result else "pass" for c in cases]
    assert kinds == ["pass", Failure.__name__, Error.__name__]
    assert "fine-tuned-2" in cases[1].name and "90" in cases[1].result[0].message
    doc = json.loads(summary.read_text())
    assert doc["exit_code"] == 2 and [c["status"] for c in doc["checks"]] == [
        "PASS", "FAIL", "ERROR"]
    assert main(["check", str(out), "--rule", "retained_knowledge:number:*M^st*>=50"]) == 0


def test_bad_rules_are_one_line(tmp_path, capsys):
    from transferscope.cli import main

    bad = tmp_path / "rules.toml"
    bad.write_text('[[check]]\nanalysis = "distraction"\nestimate = "*"\nmaxx = 0.3\n')
    with pytest.raises(ConfigError, match=r"unknown key 'maxx' \(did you mean 'max'\?\)"):
        read_rules(bad)
    bad.write_text('[[check]]\nclaim = "001.distraction"\nnot = ["contradict"]\n')
    with pytest.raises(ConfigError, match="did you mean 'contradicts'"):
        read_rules(bad)
    with pytest.raises(ConfigError, match="write ANALYSIS.KEY>=X, ANALYSIS:number:GLOB>=X"):
        parse_rule("distraction < 0.3")
    assert main(["check", str(tmp_path / "none"), "--rule", "a:number:*>=1"]) == 2
    assert "no results/findings.json" in capsys.readouterr().err


@pytest.mark.parametrize("name, code, outcomes", [("check-pass.toml", 0, 10),
                                                  ("check-fail.toml", 1, 7)])
def test_examples_name_keys_a_quick_demo_has(tmp_path, name, code, outcomes):
    """The examples' rules, on a folder with the quick demo's findings and the summary values
    they name (recorded from `transferscope demo --quick`; the closing note shows the real run):
    every rule finds its keys, check-pass passes them all, check-fail fails them all."""
    here = Path(__file__).parent
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "findings.json").write_text(
        (here / "quick_demo_findings.json").read_text())
    for analysis, summary in json.loads((here / "quick_demo_summaries.json").read_text()).items():
        (tmp_path / "results" / f"{analysis}.json").write_text(json.dumps({"summary": summary}))
    res = check(tmp_path, read_rules(EXAMPLES / name))
    assert res.exit_code == code, res.lines()
    assert {o.status for o in res.outcomes} == {"PASS" if code == 0 else "FAIL"}, res.lines()
    assert len(res.outcomes) == outcomes, res.lines()


def _summaries(out: Path) -> Path:
    """results/ANALYSIS.json summaries (an Interval dict, an X_ci95 pair) and index.json."""
    rk = {"imagenet-samples/fine-tuned + source head (M^st)": {
        "classes_recall_ge_50": 354, "classes_recall_ge_50_ci95": [320.0, 390.0],
        "bins": {"[50,60[": 12}, "role": "fine-tuned"}}
    barrier = {"P-T #1 - P-T #2": {"loss_barrier": 0.026, "loss_barrier_interval": _iv(
        "", 0.026, 0.0, 0.073, "evaluation image", 250), "images": 250}}
    for name, summary in (("retained_knowledge", rk), ("barriers", barrier)):
        (out / "results" / f"{name}.json").write_text(json.dumps({"summary": summary}))
    (out / "results" / "index.json").write_text(json.dumps({
        "analyses": ["retained_knowledge", "distraction", "composites", "barriers"],
        "skipped_analyses": ["training_curves"]}))
    return out


SHORT = '''
[check]
"retained_knowledge.numbers.*M^st*" = { min = 100 }
distraction.fine-tuned = { min = 0.2, ci_max = 0.32 }
"distraction.fine-tuned " = { ci_max = 0.3, name = "distraction below 0.3, whole interval" }
"barriers.P-T #1 - P-T #2.loss_barrier" = { ci_max = 0.1 }
"retained_knowledge.imagenet-samples/*(M^st).classes_recall_ge_50" = { ci_min = 330 }
"retained_knowledge.*.bins.[50,60[" = { max = 12 }
claims."001.distraction" = { not = "contradicts" }
claims."000.retained" = { verdict = ["contradicts", "cannot tell"] }
'''


def test_short_form_summary_paths_and_interval_limits_known_answers(tmp_path):
    out = _summaries(fake_results(tmp_path / "s", rules=SHORT.replace('fine-tuned "', '*"')))
    res = check(out)  # the study file's [check]
    got = [(o.name, o.status) for o in res.outcomes]
    assert got == [
        ("retained_knowledge.numbers.*M^st* [fine-tuned + source head (M^st)]", "PASS"),
        ("retained_knowledge.numbers.*M^st* [fine-tuned-2 + source head (M^st)]", "FAIL"),
        ("distraction.fine-tuned [estimates: fine-tuned]", "PASS"),  # not the plain number
        ("distraction below 0.3, whole interval [estimates: fine-tuned]", "FAIL"),  # hi 0.31
        ("distraction below 0.3, whole interval [estimates: scratch]", "PASS"),     # hi 0.2
        ("barriers.P-T #1 - P-T #2.loss_barrier [summary: P-T #1 - P-T #2.loss_barrier]",
         "PASS"),
        ("retained_knowledge.imagenet-samples/*(M^st).classes_recall_ge_50 [summary: "
         "imagenet-samples/fine-tuned + source head (M^st)."
         "classes_recall_ge_50]", "FAIL"),                               # lo 320 < 330
        ("retained_knowledge.*.bins.[50,60[ [summary: imagenet-samples/fine-tuned + source "
         "head (M^st).bins.[50,60[]", "PASS"),                           # a tie passes
        ("claim 001.distraction", "PASS"), ("claim 000.retained", "FAIL")]
    lines = res.lines()
    assert lines[2].endswith("0.24 [0.18, 0.31] (95 %, 20 background images): point estimate "
                             "0.24 meets >= 0.2; upper bound 0.31 meets <= 0.32")
    assert lines[5].endswith("0.026 [0, 0.073] (95 %, 250 evaluation images): upper bound "
                             "0.073 meets <= 0.1")
    assert lines[6].endswith("354 [320, 390] (95 %): lower bound 320 violates >= 330")
    assert res.exit_code == 1
    doc = res.to_dict()["checks"]
    assert doc[6]["interval"] == [320.0, 390.0] and doc[6]["tested"] == [
        {"on": "lower bound", "value": 320.0, "op": ">=", "threshold": 330.0, "ok": False}]


def test_short_form_errors_name_what_exists(tmp_path):
    out = _summaries(fake_results(tmp_path / "s"))
    rules = rules_from_table({"retained_knowledge": {"*M^st*": {"ci_min": 10}},
                              "training_curves.retained": {"min": 1},
                              "barriers.P-T #1 - P-T #2.loss_barier": {"max": 0.1},
                              "barriers.P-T #1 - P-T #2.images": {"min": 100}}, "rules.toml")
    res = check(out, rules)
    lines = res.lines()
    assert [o.status for o in res.outcomes] == ["ERROR", "ERROR", "ERROR", "ERROR", "PASS"]
    assert "has no interval, so its lower bound cannot be tested; use min/max" in lines[0]
    assert "no results of 'training_curves' (it was skipped); it has: retained_knowledge" \
        in lines[2]
    assert "did you mean 'P-T #1 - P-T #2.loss_barrier'" in lines[3]
    assert "its estimates: (none); numbers: (none); summary: 'P-T #1 - P-T #2.loss_barrier'" \
        in lines[3]
    assert res.exit_code == 2


@pytest.mark.parametrize("text, message", [
    ('[check]\n"distraction.ft" = { ci_mx = 0.3 }\n',
     "unknown option 'ci_mx' (did you mean 'ci_max'?)"),
    ('[check]\n"distraction.ft" = 0.3\n', "write it as 'distraction.ft' = { min = ... }"),
    ('[check]\ndistraction = { max = 0.3 }\n', "name a key after the analysis"),
    ('[check]\nclaims."001.distraction" = { not = "contradict" }\n', "did you mean 'contradicts'"),
    ('[check]\n"distraction.ft" = { verdict = "agrees" }\n', "verdict / not are for claim"),
    ('[check]\n"distraction.ft" = { name = "x" }\n', "needs min, max, ci_min and/or ci_max"),
])
def test_short_form_bad_rules_are_one_line(tmp_path, text, message):
    bad = tmp_path / "rules.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_rules(bad)


def test_a_study_file_with_a_bad_check_table_fails_before_it_runs():
    from transferscope.studies.spec import parse_study

    study = (EXAMPLES / "byo-models.toml").read_text()
    assert parse_study(study + '\n[check]\n"distraction.*" = { max = 0.3 }\n').check
    with pytest.raises(ConfigError, match=r"unknown option 'maxx' \(did you mean 'max'\?\)"):
        parse_study(study + '\n[check]\n"distraction.*" = { maxx = 0.3 }\n')


def test_check_run_runs_the_study_then_checks_its_own_check_table(tmp_path, capsys):
    """`check OUT --run STUDY`: a study kind's file with a [check] table (validated before it
    runs), run into OUT, then checked with that table; exit 1 on the known failing value."""
    from pydantic import BaseModel, ConfigDict

    from transferscope.cli import main
    from transferscope.studies import kinds

    class ToySpec(BaseModel):
        model_config = ConfigDict(extra="forbid")
        kept: int

    ran = []

    def run(spec, out, data_root=None):
        ran.append(spec.kept)
        fake_results(Path(out))
        doc = json.loads((Path(out) / "results" / "findings.json").read_text())
        doc["findings"][0]["numbers"]["fine-tuned + source head (M^st)"] = spec.kept
        (Path(out) / "results" / "findings.json").write_text(json.dumps(doc))

    kinds.register_study_kind("toy_gate", ToySpec, run)
    try:
        study = tmp_path / "toy.toml"
        study.write_text('kind = "toy_gate"\nkept = 120\n[check]\n'
                         '"retained_knowledge.numbers.fine-tuned + *" = { min = 100 }\n')
        assert main(["check", str(tmp_path / "a"), "--run", str(study)]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "1 of 1 checks passed"
        study.write_text(study.read_text().replace("120", "99"))
        assert main(["check", str(tmp_path / "b"), "--run", str(study)]) == 1
        assert "value (no interval) 99 violates >= 100" in capsys.readouterr().out
        study.write_text(study.read_text().replace("min =", "mn ="))
        assert main(["check", str(tmp_path / "c"), "--run", str(study)]) == 2
        assert "unknown option 'mn' (did you mean 'min'?)" in capsys.readouterr().err
        study.write_text('kind = "toy_gate"\nkept = 1\n')
        assert main(["check", str(tmp_path / "d"), "--run", str(study)]) == 2
        assert "no [check] table" in capsys.readouterr().err
        assert ran == [120, 99] and not (tmp_path / "c").exists()
    finally:
        kinds._KINDS.pop("toy_gate")

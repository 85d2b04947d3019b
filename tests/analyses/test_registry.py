"""The analysis registry's contract, run over ``list_analyses()`` (as timm's tests run over
``list_models()``): every registered analysis runs on one tiny context, returns tables or
figures, writes a finding, validates its options and shows in the written report."""

from __future__ import annotations

import json

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_folder, write_image
from transferscope.analyses import AuditContext, ModelEntry, get_analysis, list_analyses
from transferscope.analyses._registry import (finding_of, register_analysis, run_analysis,
                                              validate_options)
from transferscope.data import image_folder, source_images
from transferscope.engine import ResultCache, TrainConfig, get_recipe, train
from transferscope.errors import ConfigError
from transferscope.models import create_model, save_model
from transferscope.report import write_report

COLOURS = {"n01440764": (200, 40, 40), "n01443537": (40, 200, 40), "n01484850": (40, 40, 200),
           "n01491361": (200, 200, 40)}
SIZE = 32
#: smaller-than-default options for the slowest analyses (still validated by the registry)
CHEAP = {"basins": {"samples": 2, "pairs": 1}, "criticality": {"modules": 2}}


@pytest.fixture(scope="module")
def tiny_ctx(tmp_path_factory):
    """Source M^s = a random baseline CNN with the 1000-class head; two fine-tunes of it (P-T,
    seeds 0/1) and two from-scratch runs (RI-T, seeds 0/1), one epoch on 16 tiny images."""
    root = tmp_path_factory.mktemp("contract")
    for wnid, rgb in COLOURS.items():
        for i in range(2):
            write_image(root / "src" / f"{wnid}_{i}.JPEG", rgb, size=(48, 40))
    make_folder(root / "data" / "train", per_class=8, seed=1)
    make_folder(root / "data" / "val", per_class=4, seed=2)
    torch.manual_seed(123)  # not a training seed: the source differs from every random init
    source = create_model("baseline_cnn", image_size=SIZE)
    save_model(source, root / "source.safetensors")
    entries, targets = {}, {}
    for name, role, init, seed in (("pt1", "fine-tuned", str(root / "source.safetensors"), 0),
                                   ("pt2", "fine-tuned", str(root / "source.safetensors"), 1),
                                   ("rit1", "scratch", "random", 0),
                                   ("rit2", "scratch", "random", 1)):
        cfg = TrainConfig(arch="baseline_cnn", init=init, data=str(root / "data"), seed=seed,
                          recipe=get_recipe("quick", epochs=1, image_size=SIZE, batch_size=8))
        monitor = None
        if name == "pt1":  # audited while it trains: the training_curves section
            from transferscope.callbacks import AuditMonitor

            monitor = AuditMonitor(source, image_folder(root / "data" / "val"),
                                   source_data=source_images(root / "src"), image_size=SIZE,
                                   out=root / "runs" / name, target_images=8)
        res = train(cfg, root / "runs" / name, monitor=monitor)
        targets[name] = res.model.eval()
        entries[name] = ModelEntry(name, role, "baseline_cnn", init, seed, root / "runs" / name)
    return AuditContext(source.eval(), targets, image_folder(root / "data" / "val"),
                        {"samples": source_images(root / "src")}, image_size=SIZE,
                        batch_size=8, cache=ResultCache(root / "cache"), entries=entries)


def _study_made() -> dict:
    """Results of analyses made by a study that trains its own runs (``run=None``), built
    with their public result functions from run metrics."""
    from transferscope.analyses.block_shuffle import block_shuffle_result
    from transferscope.analyses.pretraining_checkpoints import checkpoints_result
    from transferscope.analyses.remedies import remedies_result
    from transferscope.analyses.transferability_factors import fit_factors

    per_run = pd.DataFrame([{"run": f"{v}-s{s}", "variant": v, "seed": s,
                             "clean": 0.9 - 0.01 * s, "against": a + 0.02 * s,
                             "neutral": 0.8, "biased": 3 - s, "distraction": 0.3, "cost": 10.0}
                            for v, a in (("standard", 0.5), ("pruning", 0.7)) for s in (0, 1)])
    rows = [{"target": f"t{i}", "gap": g, "width": w, "N": n, "T_FB": t, "T_SB": 1.0}
            for i, (g, w, n, t) in enumerate([(0.1, 1.0, 100, 2.0), (0.5, 2.0, 50, 1.5),
                                              (0.9, 1.5, 400, 1.2), (0.3, 3.0, 200, 1.8),
                                              (0.7, 2.5, 80, 1.1)])]
    return {
        "block_shuffle": lambda: block_shuffle_result(
            [{"block size": b, "accuracy P-T": 0.9, "accuracy RI-T": r, "relative drop %":
              100 * (0.9 - r) / 0.9, "speed P-T": 0.8, "speed RI-T": 0.6}
             for b, r in (("32", 0.8), ("*", 0.5))], "toy"),
        "pretraining_checkpoints": lambda: checkpoints_result(
            [{"pre-training epoch": e, "pre-training val accuracy": a, "final accuracy": f,
              "optimisation speed": 0.5} for e, a, f in ((0, math.nan, 0.6), (2, 0.4, 0.8))],
            "toy run"),
        "remedies": lambda: remedies_result(per_run, {"target": "toy"}),
        "transferability_factors": lambda: fit_factors(pd.DataFrame(rows)),
        "ranking": lambda: _ranking_made(),
    }


def _ranking_made():
    from transferscope.analyses.ranking import ranking_result
    from transferscope.ranking import check_ranking

    table = pd.DataFrame({"logme": [3.0, 2.0, 1.0], "knn": [0.9, 0.8, 0.5]},
                         index=["a", "b", "c"])
    acc = {"a": 0.9, "b": 0.7, "c": 0.6}
    return ranking_result(table, check_ranking(table, acc, n_boot=200), acc)


@pytest.mark.parametrize("name", list_analyses())
def test_registered_analysis_meets_the_contract(name, request, tmp_path):
    spec = get_analysis(name)
    assert spec.name == name and spec.title and spec.paper.startswith("paper")
    module = spec.run.__module__ if spec.run else None
    if spec.run is None:
        assert spec.made_by, f"{name} has neither run(ctx) nor made_by"
        made = _study_made()
        assert name in made, f"add a factory for {name} to _study_made"
        result = made[name]()
    else:
        tiny_ctx = request.getfixturevalue("tiny_ctx")
        assert module.endswith(f".{name}"), "module name == analysis name"
        assert spec.applicable(tiny_ctx), f"{name} does not apply to the tiny context"
        with pytest.raises(ConfigError, match="bogus"):
            run_analysis(name, tiny_ctx, {"bogus": 1})  # fails before running
        result = run_analysis(name, tiny_ctx, CHEAP.get(name))
    assert result.name == name
    assert result.tables or result.figures
    for key, table in result.tables.items():
        assert isinstance(table, pd.DataFrame) and len(table), (name, key)
    with pytest.raises(ConfigError, match="bogus"):
        validate_options(name, {"bogus": 1})
    found = finding_of(result)
    assert found is not None and found.text.strip().endswith(".") and found.numbers, name
    result.save(tmp_path)
    html = write_report(tmp_path, {name: result}).read_text()
    assert f"<h3 id='{name}'>" in html and spec.title in html
    from transferscope.report.page import ReportPage, with_class_names

    assert found.analysis == name and json.loads(json.dumps(found.to_dict()))["title"]
    assert with_class_names(found.html, for_html=True) in html  # rendered as it is
    assert all(with_class_names(part, for_html=True) in html for part in found.parts)
    assert f"href='#{name}'" in html  # the finding links to its evidence
    if result.figures:  # a PNG, or a client-side chart that replaces it
        page = ReportPage({name: result}, tmp_path)
        for key, table in result.tables.items():
            page.table(name, key, table)  # records the figures a client-side chart replaces
        assert "data:image/png;base64," in html or any(n == name for n, _ in page.charted)


def test_contract_sees_every_section_and_typed_options():
    names = list_analyses()
    assert len(names) == len(set(names)) >= 22
    assert set(list_analyses("remedies")) == {"remedies"}
    assert {"transferability", "domain", "transferability_factors", "ranking",
            "layer_gradients"} == set(list_analyses("transferability"))
    with pytest.raises(ConfigError, match="lambdas"):
        validate_options("barriers", {"lambdas": []})  # min_length=1
    with pytest.raises(ConfigError, match="style"):
        validate_options("composites", {"style": "paper999"})
    with pytest.raises(ConfigError, match="unknown analysis 'nope'"):
        get_analysis("nope")
    assert validate_options("criticality", {"images": 4}).images == 4


def test_context_roles_come_from_entries(tiny_ctx):
    assert tiny_ctx.with_role("fine-tuned") == ["pt1", "pt2"]
    assert tiny_ctx.with_role("scratch") == ["rit1", "rit2"]
    from transferscope.analyses._transfer import transfer_inputs

    inp = transfer_inputs(tiny_ctx)
    assert list(inp.models) == ["P-T #1", "P-T #2", "RI-T #1", "RI-T #2"]
    assert inp.pairs[:2] == [("P-T #1", "P-T #2"), ("RI-T #1", "RI-T #2")]
    # the P-T init is the source backbone: the initial weights come from the run directory
    src = tiny_ctx.source.state_dict()
    init = inp.inits["P-T #1"]
    conv = next(k for k in src if k.startswith("backbone.") and k.endswith("weight"))
    assert torch.equal(init[conv], src[conv])
    assert not torch.equal(inp.inits["RI-T #1"][conv], src[conv])
    with pytest.raises(ConfigError, match="name no target model"):
        AuditContext(tiny_ctx.source, tiny_ctx.targets, tiny_ctx.target_data,
                     tiny_ctx.source_data, image_size=SIZE,
                     entries={"ghost": ModelEntry("ghost", "scratch", "baseline_cnn")})


def test_remedies_report_shows_tables_and_figure(tmp_path):
    result = _study_made()["remedies"]()
    verdict = result.summary["verdicts"]["pruning"]
    # paired by seed: against rises by 0.2 at both seeds (std 0), clean unchanged -> counts
    assert verdict["delta_against"] == pytest.approx(0.2) and verdict["counts"]
    result.save(tmp_path)
    html = write_report(tmp_path, {"remedies": result}).read_text()
    assert "<h3 id='remedies'>" in html and "Remedies for lingering memories" in html
    assert "results/remedies__summary.csv" in html and "results/remedies__per_run.csv" in html
    assert html.count('alt="remedies__against"') == 1
    assert "pruning counts" in html


def test_findings_follow_report_order():
    from transferscope.report import sections

    order = [n for _, names in sections() for n in names]
    assert order == list_analyses()
    assert [h for h, _ in sections()][-1].startswith("Remedies")
    assert np.all([get_analysis(n).section for n in order[:8]] == np.array(["memory"] * 8))


@pytest.fixture
def toy():
    import importlib

    import toy_analysis
    from transferscope.analyses._registry import unregister_analysis

    importlib.reload(toy_analysis)  # registers (again, after an earlier test unregistered it)
    yield toy_analysis
    unregister_analysis("toy_confidence")


def test_toy_analysis_registered_in_one_file_shows_everywhere(toy, tiny_ctx, tmp_path, capsys):
    from transferscope.cli import main
    from transferscope.studies.memory import run_memory_audit
    from transferscope.studies.spec import parse_study

    assert main(["analyses"]) == 0
    listed = capsys.readouterr().out
    assert "toy_confidence" in listed and "paper 000 (toy)" in listed
    study = """
[target]
data = "x"
[[models]]
name = "m"
arch = "baseline_cnn"
[analyses]
memory = [%s]
"""
    assert parse_study(study % '"toy_confidence"').analyses.memory == ["toy_confidence"]
    with pytest.raises(ConfigError, match="toy_confidence"):  # listed among the known ones
        parse_study(study % '"toy_confidense"')
    with pytest.raises(ConfigError, match="decimals"):
        run_memory_audit(tiny_ctx, tmp_path, ["toy_confidence"],
                         params={"toy_confidence": {"decimals": -1}})
    # an option set in a study file reaches run() through the study path
    from transferscope.studies.run import study_options
    spec = parse_study(study % '"toy_confidence"' + "[analyses.options.toy_confidence]\n"
                       "decimals = 1\n")
    one = run_memory_audit(tiny_ctx, tmp_path / "one", ["toy_confidence"],
                           params=study_options(spec))["toy_confidence"]
    assert {len(str(v).split(".")[1]) for v in one.tables["confidence"]["mean confidence"]} \
        == {1}
    res = run_memory_audit(tiny_ctx, tmp_path, ["toy_confidence"])["toy_confidence"]
    assert run_analysis("toy_confidence", tiny_ctx).tables["confidence"].equals(
        res.tables["confidence"])  # the default (3 decimals) from its options model alone
    for k, m in tiny_ctx.targets.items():  # independent computation
        assert not m.training  # predict() gave the model back in eval mode
        with torch.no_grad():
            x = torch.stack([img for img, _ in tiny_ctx.target_data.with_transform(
                __import__("transferscope.data", fromlist=["eval_transform"]).eval_transform(
                    m.norm, SIZE))])
            expect = torch.softmax(m(x).float(), 1).max(1).values.mean().item()
        assert res.summary[k] == pytest.approx(expect, abs=1e-5)
    html = write_report(tmp_path, res and {"toy_confidence": res}).read_text()
    assert "<h3 id='toy_confidence'>Toy: mean top-1 confidence (paper 000 (toy))</h3>" in html
    assert "<b>Toy confidence</b>: pt1" in html and "results/toy_confidence__confidence.csv" in html
    # its resolution note and drill-down panel come from the registration alone
    assert "Resolution: toy over 4 models." in html
    meta = json.loads(html.split("id='ts-meta'>")[1].split("</script>")[0])
    from transferscope.report.page import chart_spec  # its chart, from the registration
    assert chart_spec("toy_confidence", "confidence")["kind"] == "heatmap"
    blocks = [json.loads(b.split(">", 1)[1].split("</script>")[0]) for b in
              html.split("<script type='application/json' id='tbl-")[1:]]
    (table,) = [b for b in blocks if b["analysis"] == "toy_confidence"]
    assert table["chart"] == {"kind": "heatmap", "rows": "model", "cols": "data",
                              "value": "mean confidence"}
    assert meta["panels"] == [{"analysis": "toy_confidence", "widget": "bars",
                               "table": "confidence", "value": "mean confidence",
                               "heading": "Toy: confidence of each model"}]
    with pytest.raises(ConfigError, match="drill-down widget 'pie'"):
        register_analysis("toy_bad", title="t", paper="p", section="memory",
                          drill=(dict(widget="pie"),), made_by="x")

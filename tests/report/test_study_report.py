"""Study files, the HTML report and the guard command on tiny data."""

from __future__ import annotations

import json

import pytest

from conftest import write_image
from transferscope.cli import main
from transferscope.errors import ConfigError
from transferscope.studies.demo_toml import DEMO_TOML
from transferscope.studies.spec import parse_study, quick

COLOURS = {"n01440764": (200, 40, 40), "n01443537": (40, 200, 40), "n01484850": (40, 40, 200)}


def test_demo_spec_parses_and_quick_variant_is_small():
    spec = parse_study(DEMO_TOML)
    assert [m.name for m in spec.models][:2] == ["fine-tuned", "scratch-cnn"]
    q = quick(spec)
    assert q.image_size == 96 and all(m.epochs <= 6 for m in q.models)


@pytest.mark.parametrize("text,key", [
    ("[target]\ndata = 1\n[[models]]\nname='a'\narch='x'\n", "target.data"),
    ("[target]\ndata='h'\n[[models]]\nname='a'\narch='x'\nepochs=0\n", "models.0.epochs"),
    ("[target]\ndata='h'\n[[models]]\nname='a'\narch='x'\nbogus=1\n", "models.0.bogus"),
    ("[target]\ndata='h'\n", "models"),
    ("[target]\ndata='h'\n[[models]]\nname='a'\narch='x'\n[analyses]\nmemory=['bias']\n",
     "analyses.memory"),  # checked before anything trains: the name is interference_bias
    ("[target]\ndata='h'\n[[models]]\nname='a'\narch='x'\n[analyses]\ntransfer=['cka', 'x']\n",
     "analyses.transfer"),
])
def test_bad_study_keys_are_named(text, key):
    with pytest.raises(ConfigError, match=f"study.toml: key '{key}'"):
        parse_study(text, "study.toml")


def test_malformed_toml_and_missing_arch_are_one_line_errors():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_study("[target\n", "s.toml")
    with pytest.raises(ConfigError, match="needs 'arch'"):
        parse_study("[target]\ndata='h'\n[[models]]\nname='a'\n", "s.toml")


def test_study_audit_report_and_guard(tiny_split, tmp_path, capsys):
    for wnid, rgb in COLOURS.items():
        write_image(tmp_path / "src" / f"{wnid}_0.JPEG", rgb, size=(48, 40))
    study = tmp_path / "study.toml"
    study.write_text(f"""
name = "tiny study"
image_size = 32
[target]
data = "{tiny_split}"
[source_images]
sets = ["{tmp_path / 'src'}"]
views = 2
[[models]]
name = "fine-tuned"
arch = "efficientnet_lite0"
recipe = "quick"
epochs = 1
batch_size = 8
[[models]]
name = "fine-tuned-2"
arch = "efficientnet_lite0"
recipe = "quick"
epochs = 1
batch_size = 8
seed = 1
[[models]]
name = "scratch-lite0"
arch = "efficientnet_lite0"
init = "random"
recipe = "quick"
epochs = 1
batch_size = 8
[analyses.transfer_options]
lambdas = [0.0, 0.5, 1.0]
criticality_images = 8
criticality_modules = 3
[[models]]
name = "scratch"
arch = "baseline_cnn"
init = "random"
recipe = "paper000-scratch"
epochs = 1
[analyses.composites]
overlays_per_class = 2
repeats = 1
""")
    out = tmp_path / "out"
    assert main(["audit", str(study), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Findings" in html and "data:image/png;base64," in html
    assert "paper 000" in html and "tiny study" in html and "paper 003" in html
    for name in ("retained_knowledge", "composites", "distraction"):  # drill-down thumbnails
        assert (out / "images" / f"{name}.json").exists(), name
    assert "data-analysis='distraction'" in html and "data-analysis='composites'" in html
    for name in ("mistakes", "cka", "distances", "barriers", "criticality", "spectra"):
        assert (out / "results" / f"{name}.json").exists(), name
    # paper 002 on the study's own runs: fine-tuned and scratch-lite0 share arch and seed 0
    for name in ("transferability", "domain", "layer_gradients"):
        assert (out / "results" / f"{name}.json").exists(), name
    t = json.loads((out / "results" / "transferability.json").read_text())["summary"]
    assert t and "paper 002" in html
    barrier = json.loads((out / "results" / "barriers.json").read_text())
    assert set(barrier["summary"]) == {"P-T #1 - P-T #2", "P-T #1 - RI-T #1"}
    basin = json.loads((out / "results" / "basins.json").read_text())["summary"]
    assert set(basin) == {"P-T"} and basin["P-T"]["solutions"] == ["P-T #1", "P-T #2"]
    assert basin["P-T"]["epsilon"] >= 0 and 0 <= basin["P-T"]["mu"] <= 1  # mu: mean error
    assert (out / "runs" / "fine-tuned" / "model.safetensors").exists()
    capsys.readouterr()
    img = tiny_split / "val" / "ants" / "ants_0.jpg"
    assert main(["guard", "--study", str(out), "--json", str(img), str(tmp_path / "nope.jpg")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"][0]["prediction"] in ("ants", "bees")
    assert isinstance(report["images"][0]["interference"], bool)
    assert "unreadable" in report["images"][1]["error"]
    assert main(["guard", "--study", str(out), str(tiny_split / "val" / "ants")]) == 0  # folder
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("model ") and "threshold p_lo" in lines[0]
    assert len(lines) == 1 + len(list((tiny_split / "val" / "ants").iterdir()))
    assert all("; score " in ln and "threshold" in ln for ln in lines[1:])


def test_missing_data_folder_and_unknown_model_are_one_line(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(f"[target]\ndata='no-such-set'\n[source_images]\nsets=['{tmp_path / 'src'}']\n"
                     "[[models]]\nname='a'\narch='efficientnet_lite0'\n")
    assert main(["audit", str(study), "--out", str(tmp_path / "o"), "--data-root",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data folder not found") and "\n" not in err
    assert main(["evaluate", "--model", "resnet9000", "--data", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "study file not found" in capsys.readouterr().err


def test_cached_analysis_computes_once_and_restores_files(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from transferscope.analyses._base import AnalysisResult
    from transferscope.engine import ResultCache
    from transferscope.studies.what_transferred import cached_analysis

    calls = []

    def compute():
        calls.append(1)
        fig, _ = plt.subplots()
        return AnalysisResult("barriers", {"x": 1.5}, {"path": pd.DataFrame({"a": [1, 2]})},
                              {"plot": fig})

    cache = ResultCache(tmp_path / "cache")
    first = cached_analysis(cache, tmp_path / "out1", "barriers", {"k": 1}, compute)
    again = cached_analysis(cache, tmp_path / "out2", "barriers", {"k": 1}, compute)
    other = cached_analysis(cache, tmp_path / "out3", "barriers", {"k": 2}, compute)
    assert len(calls) == 2 and again.summary == first.summary == other.summary
    assert again.tables["path"]["a"].tolist() == [1, 2]
    assert (tmp_path / "out2" / "figures" / "barriers__plot.png").exists()
    assert (tmp_path / "out2" / "results" / "barriers__path.csv").exists()


def test_example_study_files_parse():
    from pathlib import Path

    from transferscope.studies.spec import load_study

    from transferscope.studies.check import read_rules
    from transferscope.studies.run import load_any

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        if path.name.startswith("check-"):  # rules files for `transferscope check`
            assert read_rules(path), path
        elif "kind =" in path.read_text():
            spec = load_any(path)
            assert getattr(spec, "models", None) or getattr(spec, "candidates", None), path
        else:
            spec, _ = load_study(path)
            assert spec.models, path

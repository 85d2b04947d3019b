"""Names from a study file, the command line, registered code or the data never make a path
outside the output folder: each goes through ``transferscope._paths.safe_component``, which
refuses it (one line naming the setting) or slugs it, keeping the name for display."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from transferscope._paths import run_dir, safe_component
from transferscope.analyses._base import AnalysisResult
from transferscope.errors import ConfigError
from transferscope.studies.demo_toml import DEMO_TOML
from transferscope.studies.spec import StudySpec, parse_study

HOSTILE = ["../../x", "/abs/x", "a/b", "..", ".", "", "con\x00trol", "\n", "a\\b", "x" * 300]


def _tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root)
            for d, dirs, files in os.walk(root) for f in dirs + files}


def _inside(child, parent) -> bool:
    child, parent = os.path.realpath(child), os.path.realpath(parent)
    return os.path.commonpath([child, parent]) == parent and child != parent


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_component_refuses_with_one_line_naming_the_setting(name):
    with pytest.raises(ConfigError) as err:
        safe_component(name, "models.name")
    msg = str(err.value)
    assert msg.startswith("models.name: ") and "\n" not in msg and "\x00" not in msg


@pytest.mark.parametrize("name", HOSTILE)
def test_slugged_names_stay_one_component_inside_the_folder(tmp_path, name):
    slug = safe_component(name, slug=True)
    assert safe_component(slug) == slug  # a slug is itself safe
    assert _inside(tmp_path / slug, tmp_path) and (tmp_path / slug).parent == tmp_path
    (tmp_path / slug).mkdir()
    assert _tree(tmp_path) == {slug}


def test_slugs_keep_different_names_apart_and_safe_names_unchanged():
    assert len({safe_component(n, slug=True) for n in HOSTILE}) == len(HOSTILE)
    assert safe_component("a/b", slug=True) != safe_component("a_b", slug=True)
    for name in ("fine-tuned", "P-T #1", "scratch-cnn", "block16-RI-T", "a@0.5N", "héllo"):
        assert safe_component(name, slug=True) == name == safe_component(name)


def _spec_with_model(name: str) -> StudySpec:
    spec = parse_study(DEMO_TOML)
    models = [m.model_copy(update={"name": name}) if i == 0 else m
              for i, m in enumerate(spec.models)]
    return spec.model_copy(update={"models": models})


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/b", "..", "con\x00trol", "\n"])
def test_a_study_file_with_a_hostile_model_name_fails_at_parse(name):
    text = DEMO_TOML.replace('name = "fine-tuned"', f"name = {json.dumps(name)}", 1)
    assert text != DEMO_TOML
    with pytest.raises(ConfigError, match=r"demo study: key 'models.name': .* cannot be a "
                       r"folder name") as err:
        parse_study(text, "demo study")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["../../x", "ABS", "a/b", "..", "con\x00trol", "\n"])
def test_running_a_hostile_model_name_writes_nothing_anywhere(tmp_path, name, monkeypatch):
    """A spec built without the parser (a notebook's StudySpec) is refused by run_study and by
    the path builders themselves, before anything is downloaded, trained or written."""
    from transferscope.studies import run as study_run

    if name == "ABS":
        name = str(tmp_path / "abs" / "x")
    spec = _spec_with_model(name)
    out = tmp_path / "a" / "b" / "out"
    monkeypatch.setattr("transferscope.data.fetch.ensure_sets",
                        lambda *a, **k: pytest.fail("downloads before the names are checked"))
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match="models.name"):
        study_run.run_study(spec, out)
    with pytest.raises(ConfigError, match="models.name"):
        study_run.train_jobs(spec, out)
    with pytest.raises(ConfigError, match="models.name"):
        study_run.model_entries(spec, {}, out)
    assert _tree(tmp_path) == before
    assert not os.path.exists(str(tmp_path / "abs"))


def test_run_dir_refuses_or_slugs(tmp_path):
    assert run_dir(tmp_path, "fine-tuned") == tmp_path / "runs" / "fine-tuned"
    with pytest.raises(ConfigError, match="run name"):
        run_dir(tmp_path, "../../x")
    assert _inside(run_dir(tmp_path, "../../x", slug=True), tmp_path / "runs")


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/b", "..", "con\x00trol", "\n"])
def test_a_result_with_hostile_names_is_written_inside_out_and_read_back(tmp_path, name):
    """An AnalysisResult a user builds by hand: its name and table/figure keys become file
    names slugged, inside ``out``; reading it back gives the original names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1])
    res = AnalysisResult(name, {"n": 1}, {name: pd.DataFrame({"a": [1]})}, {name: fig},
                         images={"thumb": b"\xff\xd8"})
    out = tmp_path / "out"
    written = res.save(out)
    files = [p for group in written.values() for p in group]
    assert len(files) == 4 and all(_inside(p, out) for p in files)
    assert {os.path.dirname(os.path.relpath(p, out)) for p in files} == {
        "results", "figures", "images"}
    assert all(p.split(os.sep)[0] == "out" for p in _tree(tmp_path))
    back = AnalysisResult.load(written["json"][0])
    assert back.name == name and list(back.tables) == [name] and back.images == {
        "thumb": b"\xff\xd8"}


def test_registering_an_analysis_under_a_hostile_name_fails():
    from transferscope.analyses._registry import register_analysis

    for name in ("../x", "/abs", "a/b", "", "..", "x\n"):
        with pytest.raises(ConfigError, match="analysis name"):
            register_analysis(name, title="t", paper="p", section="memory",
                              run=lambda ctx: None)


def test_transferability_run_dirs_of_odd_targets_stay_inside(tmp_path):
    """A target's label (its folder name) names its runs: slugged when unsafe."""
    from transferscope.studies.transferability import _label

    for target in ("..", "/", "a\\b", "."):
        label = _label(target, 1.0, None)
        assert _inside(run_dir(tmp_path, f"{label}-scratch", slug=True), tmp_path / "runs")

"""The `ranking` study kind on tiny data: a row per candidate and a column per score, a
candidate that cannot be built reported in one line while the others are ranked, fine-tuned
ground truth through the executor, findings and report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from transferscope.errors import ConfigError
from transferscope.studies.kinds import run_kind
from transferscope.studies.run import load_any


def _study(tmp_path, tiny_split, extra=""):
    path = tmp_path / "ranking.toml"
    path.write_text(f'''kind = "ranking"
target = "{tiny_split}"
image_size = 32
[[candidates]]
name = "cnn"
model = "baseline_cnn"
init = "random"
[[candidates]]
name = "lite0"
model = "efficientnet_lite0"
init = "imagenet"
[[candidates]]
name = "missing"
model = "{tmp_path / 'nothere.safetensors'}"
''' + extra)
    return load_any(path)


def test_ranking_study_writes_one_table_and_names_a_broken_candidate(tmp_path, tiny_split,
                                                                      capsys):
    out = run_kind(_study(tmp_path, tiny_split), tmp_path / "out")
    scores = pd.read_csv(tmp_path / "out" / "results" / "ranking__scores.csv")
    assert list(scores["candidate"])[:2] != [] and set(scores["candidate"]) == {
        "cnn", "lite0", "missing"}
    for col in ("logme", "leep", "nce", "hscore", "hscore_reg", "gbc", "knn"):
        assert col in scores.columns
    row = scores.set_index("candidate")
    assert pd.notna(row.loc["lite0", "logme"]) and pd.notna(row.loc["cnn", "logme"])
    assert pd.isna(row.loc["cnn", "leep"])  # random weights: no source head
    assert "no such run directory or model file" in row.loc["missing", "error"]
    err = capsys.readouterr().err
    assert err.count("missing: not ranked") == 1
    doc = json.loads((tmp_path / "out" / "results" / "findings.json").read_text())
    (f,) = [f for f in doc["findings"] if f["analysis"] == "ranking"]
    assert "ranks first on" in f["text"] and "too few candidates" in f["text"]
    assert "missing: not ranked" in f["text"]
    assert out.report is not None and "Choosing the source" in out.report.read_text()


def test_fine_tuned_ground_truth_gives_tau_and_r_per_score(tmp_path, tiny_split):
    spec = _study(tmp_path, tiny_split, '[fine_tune]\nrecipe = "quick"\nepochs = 1\n'
                  'image_size = 32\nbatch_size = 8\n')
    run_kind(spec, tmp_path / "out")
    res = json.loads((tmp_path / "out" / "results" / "ranking.json").read_text())
    acc = res["summary"]["accuracy"]
    assert set(acc) == {"cnn", "lite0"} and all(0 <= a <= 1 for a in acc.values())
    run_metrics = json.loads((tmp_path / "out" / "runs" / "lite0" / "metrics.json").read_text())
    assert acc["lite0"] == run_metrics[-1]["val_acc"]
    check = res["summary"]["check"]
    assert set(check) >= {"logme", "knn"} and check["logme"]["n"] == 2
    # each fine-tuned model's per-image validation results: their mean is its val_acc, and
    # the interval resamples the images with the candidates
    from transferscope.studies.ranking import validation_correct
    correct = validation_correct(spec, tmp_path / "out", ["lite0"])
    assert correct["lite0"].shape == (8,) and correct["lite0"].mean() == pytest.approx(
        acc["lite0"], abs=1e-6)
    assert check["logme"]["resampled"] == "candidates and validation images"
    assert "validation image" in check["logme"]["tau_w"]["method"]
    assert "too few candidates" in check["logme"]["note"]
    assert (tmp_path / "out" / "figures" / "ranking__score_vs_accuracy.png").is_file()


def test_bad_ranking_studies_fail_before_any_work(tmp_path, tiny_split):
    path = tmp_path / "r.toml"
    path.write_text(f'kind = "ranking"\ntarget = "{tiny_split}"\n[[candidates]]\nname = "a"\n'
                    'model = "efficentnet_lite0"\n[[candidates]]\nname = "a"\nmodel = "x"\n')
    with pytest.raises(ConfigError, match="repeated: a"):
        load_any(path)
    path.write_text(f'kind = "ranking"\ntarget = "{tiny_split}"\n[[candidates]]\nname = "a"\n'
                    'model = "efficentnet_lite0"\n')
    with pytest.raises(ConfigError, match="candidate 'a'.*did you mean 'efficientnet_lite0'"):
        run_kind(load_any(path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rank_best_as_a_studys_source(tmp_path, tiny_split):
    """``[source] arch = "rank:OUT"``: the audit study takes the ranking's best candidate (by
    LogME, or ``#score``) as its source and can fine-tune the same architecture."""
    from transferscope.studies.spec import parse_study

    run_kind(_study(tmp_path, tiny_split), tmp_path / "rk")
    res = json.loads((tmp_path / "rk" / "results" / "ranking.json").read_text())
    best = res["summary"]["best"]["logme"]
    expect = {"cnn": ("baseline_cnn", "random"), "lite0": ("efficientnet_lite0", "imagenet")}
    spec = parse_study(f'''[source]
arch = "rank:{tmp_path / 'rk'}"
[target]
data = "{tiny_split}"
[[models]]
name = "ft"
arch = "rank:{tmp_path / 'rk'}#knn"
''')
    assert (spec.source.arch, spec.source.init) == expect[best]
    assert spec.models[0].arch == expect[res["summary"]["best"]["knn"]][0]
    with pytest.raises(ConfigError, match="no candidate scored by 'lgome'.*did you mean 'logme'"):
        parse_study(f'[source]\narch = "rank:{tmp_path / "rk"}#lgome"\n[target]\ndata = "x"\n'
                    '[[models]]\nname = "a"\narch = "baseline_cnn"\n')
    with pytest.raises(ConfigError, match="no ranking results"):
        parse_study(f'[source]\narch = "rank:{tmp_path / "none"}"\n[target]\ndata = "x"\n'
                    '[[models]]\nname = "a"\narch = "baseline_cnn"\n')


def test_the_example_study_scaled_down_ranks_its_candidates_and_names_a_broken_one(
        tmp_path, tiny_split, capsys):
    """examples/ranking.toml at 32 px on 16 images, plus a candidate that cannot be built:
    a row per candidate, a column per score, the broken one named in one line."""
    from pathlib import Path

    from transferscope.ranking import SCORES
    from transferscope.studies.ranking import RankingSpec
    from transferscope.studies.spec import build_spec

    example = load_any(Path(__file__).parents[2] / "examples" / "ranking.toml")
    data = example.model_dump()
    data.update(target=str(tiny_split), image_size=32, candidates=[
        *data["candidates"], {"name": "broken", "model": str(tmp_path / "gone.safetensors")}])
    run_kind(build_spec(RankingSpec, data), tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "results" / "ranking__scores.csv",
                        index_col="candidate")
    assert list(table.columns[:len(SCORES)]) == list(SCORES)
    assert set(table.index) == {"lite0-imagenet", "lite0-random", "resnet18-random", "broken"}
    ranked = table.drop(index="broken")
    assert ranked[["logme", "hscore_reg", "gbc", "knn"]].notna().all().all()
    assert ranked["leep"].notna().tolist() == [n == "lite0-imagenet" for n in ranked.index]
    assert table.loc["broken", SCORES].isna().all()
    assert [ln for ln in capsys.readouterr().err.splitlines() if "broken" in ln] == [
        f"broken: not ranked, {table.loc['broken', 'error']}"]


@pytest.mark.parametrize("sign", [1, -1])
def test_a_score_equal_to_the_accuracy_gives_tau_and_r_of_one_reversed_minus_one(
        tmp_path, tiny_split, monkeypatch, sign):
    """Known answer through the fine-tuning seam: the executor returns +-LogME of each
    candidate as its accuracy, so LogME's tau_w and r must be exactly +-1."""
    from types import SimpleNamespace

    import transferscope.engine.executor as executor
    import transferscope.ranking as ranking

    tables = []
    rank = ranking.rank_candidates
    monkeypatch.setattr(ranking, "rank_candidates",
                        lambda *a, **k: tables.append(rank(*a, **k)) or tables[-1])
    monkeypatch.setattr(executor, "run_trainings", lambda jobs, executor="local", **kw: [
        SimpleNamespace(final_val_accuracy=sign * float(tables[-1].loc[j.out.name, "logme"]))
        for j in jobs])
    spec = _study(tmp_path, tiny_split, '[[candidates]]\nname = "lite0-random"\n'
                  'model = "efficientnet_lite0"\ninit = "random"\n[fine_tune]\nepochs = 1\n')
    run_kind(spec, tmp_path / "out")
    check = json.loads((tmp_path / "out" / "results" / "ranking.json").read_text()
                       )["summary"]["check"]["logme"]
    assert check["n"] == 3
    assert check["tau_w"]["value"] == pytest.approx(sign, abs=1e-12)
    assert check["r"]["value"] == pytest.approx(sign, abs=1e-12)
    doc = json.loads((tmp_path / "out" / "results" / "findings.json").read_text())
    (f,) = [f for f in doc["findings"] if f["analysis"] == "ranking"]
    labels = [e["label"] if isinstance(e, dict) else e[0] for e in f["estimates"]]
    assert "Pearson r, logme vs fine-tuned accuracy" in labels


def test_given_accuracies_are_ground_truth_and_the_study_file_reads_back(tmp_path, tiny_split):
    from transferscope.studies.ranking import spec_toml

    spec = _study(tmp_path, tiny_split, '[accuracy]\ncnn = 0.4\nlite0 = 0.9\n')
    run_kind(spec, tmp_path / "out")
    res = json.loads((tmp_path / "out" / "results" / "ranking.json").read_text())
    assert res["summary"]["accuracy"] == {"cnn": 0.4, "lite0": 0.9}
    assert res["summary"]["check"]["logme"]["n"] == 2
    again = load_any(tmp_path / "out" / "study.toml")
    assert again == spec and spec_toml(again) == spec_toml(spec)
    with pytest.raises(ConfigError, match="key 'accuracy'.*'lite' is no candidate.*did you "
                       "mean 'lite0'"):
        _study(tmp_path, tiny_split, '[accuracy]\nlite = 0.9\n')


def _noise_folder(root, classes=("tench", "goldfish"), per_class=8, seed=0):
    """Textured noise images (high GLCM contrast, wide colour spread), class folders named by
    ImageNet class names, so source_images reads them as a source sample."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(
                root / name / f"{name}_{i}.png")
    return root


def test_target_factors_a_target_like_the_source_lies_nearer(tmp_path):
    from conftest import make_folder
    from transferscope.analyses.ranking import target_factors
    from transferscope.data import image_folder, source_images

    source = source_images(_noise_folder(tmp_path / "src", seed=0))
    near = image_folder(_noise_folder(tmp_path / "near", seed=1))
    far = image_folder(make_folder(tmp_path / "far", per_class=8))  # flat colours
    f_near, f_far = target_factors(near, source), target_factors(far, source)
    assert f_far["domain_gap"] > 10 * max(f_near["domain_gap"], 1e-3)
    assert f_near["N"] == len(near) == 16 and f_near["images"] == 16
    assert f_near["source images"] == 16 and f_near["source"] == str(tmp_path / "src")
    limited = target_factors(near, source, limit=5)
    assert limited["images"] == 5 and limited["N"] == 16  # N is the whole split


def test_ranking_study_states_the_targets_factors_or_why_not(tmp_path, tiny_split, capsys):
    src = _noise_folder(tmp_path / "src")
    one = '[[candidates]]\nname = "cnn"\nmodel = "baseline_cnn"\ninit = "random"\n'
    for source, expect in ((str(src), True), ("", False), (str(tmp_path / "nothere"), False)):
        path = tmp_path / "r.toml"
        path.write_text(f'kind = "ranking"\ntarget = "{tiny_split}"\nimage_size = 32\n'
                        f'source = "{source}"\n' + one)
        out = tmp_path / f"out{len(source)}"
        run_kind(load_any(path), out)
        summary = json.loads((out / "results" / "ranking.json").read_text())["summary"]
        err = capsys.readouterr().err
        assert ("factors" in summary) == expect
        if expect:
            assert summary["factors"]["N"] == 16 and summary["factors"]["domain_gap"] > 0
            doc = json.loads((out / "results" / "findings.json").read_text())
            (f,) = [f for f in doc["findings"] if f["analysis"] == "ranking"]
            assert "domain gap" in f["text"] and "the same for every candidate" in f["text"]
        elif source:  # not found: one line saying so and how to set it, the ranking written
            (line,) = [x for x in err.splitlines() if "source sample" in x]
            assert "nothere" in line and "not computed" in line
        else:
            assert "source sample" not in err

"""``transferscope rank``: the options become a ranking study run by the study's code
(results/ranking__scores.csv with a column per score, study.toml that reads back to the same
spec, report.html), one line per candidate that cannot be built (the others still ranked), a
typo or a one-class target refused before any work, --fine-tune through the training
executors with tau and r computed against the runs' accuracies."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, weightedtau

from conftest import make_folder
from transferscope.cli import main
from transferscope.ranking import SCORES
from transferscope.studies.run import load_any


def test_rank_writes_the_study_outputs_and_names_a_bad_candidate_in_one_line(tmp_path,
                                                                             capsys):
    data = make_folder(tmp_path / "t", classes=("a", "b", "c"), per_class=4)
    gone = tmp_path / "nothere.safetensors"
    code = main(["rank", "--target", str(data), "--split", "", "--out", str(tmp_path / "o"),
                 "--candidate", "cnn=baseline_cnn@random", "--candidate", f"gone={gone}",
                 "--accuracy", "cnn=0.5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    table = pd.read_csv(tmp_path / "o" / "results" / "ranking__scores.csv", index_col=0)
    assert list(table.index) == ["cnn", "gone"]
    assert all(s in table.columns for s in SCORES)
    assert pd.notna(table.loc["cnn", "logme"]) and pd.isna(table.loc["gone", "logme"])
    lines = [ln for ln in err.splitlines() if ln.startswith("gone:")]
    assert len(lines) == 1 and "no such run directory or model file" in lines[0]
    assert "logme" in out and "too few candidates to tell (1; at least 5 needed)" in out
    assert (tmp_path / "o" / "report.html").is_file()
    spec = load_any(tmp_path / "o" / "study.toml")  # the study it ran: a rerun
    assert [(c.name, c.model, c.init) for c in spec.candidates] == [
        ("cnn", "baseline_cnn", "random"), ("gone", str(gone), "imagenet")]
    assert spec.split == "" and spec.accuracy == {"cnn": 0.5} and spec.fine_tune is None


def test_a_typo_is_refused_before_any_work_with_did_you_mean(tmp_path, capsys):
    data = make_folder(tmp_path / "t", classes=("a", "b"), per_class=3)
    code = main(["rank", "--target", str(data), "--split", "", "--out", str(tmp_path / "o"),
                 "--candidate", "cnn=baseline_cnn@random", "--candidate", "typo=baseline_cnm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "candidate 'typo'" in err and "did you mean 'baseline_cnn'" in err
    assert not (tmp_path / "o").exists()


def test_a_one_class_target_is_refused_in_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "one", classes=("only",), per_class=3)
    code = main(["rank", "--target", str(data), "--split", "", "--out", str(tmp_path / "o"),
                 "--candidate", "cnn=baseline_cnn@random"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "at least two classes" in err
    assert not (tmp_path / "o").exists()


def test_a_malformed_candidate_or_accuracy_is_refused_before_any_work(tmp_path, capsys):
    code = main(["rank", "--target", "nowhere", "--out", str(tmp_path / "o"),
                 "--candidate", "baseline_cnn"])
    assert code == 2 and "write NAME=MODEL[@INIT]" in capsys.readouterr().err
    code = main(["rank", "--target", "nowhere", "--out", str(tmp_path / "o"),
                 "--candidate", "small=baseline_cnn", "--accuracy", "smal=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "key 'accuracy'" in err and "(did you mean 'small'?)" in err
    assert not (tmp_path / "o").exists()


def test_fine_tune_trains_each_candidate_and_checks_scores_against_their_accuracy(
        tmp_path, tiny_split, capsys, monkeypatch):
    """The executor seam returns known accuracies; tau_w and r must be those of the scores
    against exactly these numbers (computed here independently), by candidate name."""
    import transferscope.engine.executor as executor

    known = {"cnn": 0.55, "lite0": 0.9, "lite0-random": 0.6}
    seen = []

    def fake_run_trainings(jobs, executor="local", **kw):
        seen.extend((j.out, j.config.arch, j.config.init, j.config.recipe.epochs, executor)
                    for j in jobs)
        return [SimpleNamespace(final_val_accuracy=known[j.out.name]) for j in jobs]

    monkeypatch.setattr(executor, "run_trainings", fake_run_trainings)
    code = main(["rank", "--target", str(tiny_split), "--out", str(tmp_path / "o"),
                 "--image-size", "32", "--candidate", "cnn=baseline_cnn@random",
                 "--candidate", "lite0=efficientnet_lite0",
                 "--candidate", "lite0-random=efficientnet_lite0@random",
                 "--fine-tune", "quick", "--epochs", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted((p.name, a, i, e, x) for p, a, i, e, x in seen) == [
        ("cnn", "baseline_cnn", "random", 1, "local"),
        ("lite0", "efficientnet_lite0", "imagenet", 1, "local"),
        ("lite0-random", "efficientnet_lite0", "random", 1, "local")]
    res = json.loads((tmp_path / "o" / "results" / "ranking.json").read_text())
    assert res["summary"]["accuracy"] == known
    table = pd.read_csv(tmp_path / "o" / "results" / "ranking__scores.csv", index_col=0)
    assert table["fine-tuned accuracy"].to_dict() == known
    for score in ("logme", "hscore_reg"):
        x = table.loc[list(known), score].to_numpy(float)
        y = np.array(list(known.values()))
        got = res["summary"]["check"][score]
        assert got["tau_w"]["value"] == weightedtau(x, y).statistic
        assert abs(got["r"]["value"] - pearsonr(x, y).statistic) < 1e-12
    assert "tau_w" in out and "score vs fine-tuned accuracy" in out
    assert load_any(tmp_path / "o" / "study.toml").fine_tune.epochs == 1

"""``transferscope rank``: writes OUT/ranking.csv with a column per score, prints the table,
one line per bad candidate (the others still ranked), a one-class target refused in one
line, malformed --candidate refused before any work."""

from __future__ import annotations

import pandas as pd

from conftest import make_folder
from transferscope.cli import main
from transferscope.ranking import SCORES


def test_rank_writes_the_table_and_names_a_bad_candidate_in_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "t", classes=("a", "b", "c"), per_class=4)
    code = main(["rank", "--target", str(data), "--split", "", "--out", str(tmp_path / "o"),
                 "--candidate", "cnn=baseline_cnn@random",
                 "--candidate", "typo=baseline_cnm@random",
                 "--accuracy", "cnn=0.5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    table = pd.read_csv(tmp_path / "o" / "ranking.csv", index_col=0)
    assert list(table.index) == ["cnn", "typo"]
    assert all(s in table.columns for s in SCORES)
    assert pd.notna(table.loc["cnn", "logme"]) and pd.isna(table.loc["typo", "logme"])
    lines = [ln for ln in err.splitlines() if ln.startswith("typo:")]
    assert len(lines) == 1 and "did you mean 'baseline_cnn'" in lines[0]
    assert "logme" in out and "too few candidates to tell (1; at least 5 needed)" in out
    assert (tmp_path / "o" / "ranking_check.csv").is_file()


def test_a_one_class_target_is_refused_in_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "one", classes=("only",), per_class=3)
    code = main(["rank", "--target", str(data), "--split", "", "--out", str(tmp_path / "o"),
                 "--candidate", "cnn=baseline_cnn@random"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "at least two classes" in err
    assert not (tmp_path / "o").exists()


def test_a_malformed_candidate_is_refused_before_any_work(tmp_path, capsys):
    code = main(["rank", "--target", "nowhere", "--out", str(tmp_path / "o"),
                 "--candidate", "baseline_cnn"])
    assert code == 2 and "write NAME=MODEL[@INIT]" in capsys.readouterr().err

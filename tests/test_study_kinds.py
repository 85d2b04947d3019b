"""Every study kind has a typed spec that a TOML file and the keyword (CLI) form both build."""

from __future__ import annotations

import pytest

from transferscope.errors import ConfigError
from transferscope.studies.remedies import RemedySpec
from transferscope.studies.run import load_any, study_kinds
from transferscope.studies.demo_toml import DEMO_TOML
from transferscope.studies.spec import StudySpec, build_spec
from transferscope.studies.training_runs import BlockShuffleSpec, CheckpointSpec
from transferscope.studies.transferability import TransferabilitySpec


@pytest.mark.parametrize("text, cls, expect", [
    ('kind = "transferability"\ntargets = ["a", "b"]\nfractions = [0.5]\n',
     TransferabilitySpec, {"targets": ["a", "b"], "fractions": [0.5], "epochs": 5}),
    ('kind = "block_shuffle"\nblock_sizes = [8, "*"]\nimage_size = 32\n', BlockShuffleSpec,
     {"block_sizes": [8, "*"], "image_size": 32}),
    ('kind = "pretraining_checkpoints"\npretrain_run = "runs/pre"\ncheckpoints = [0, 2]\n',
     CheckpointSpec, {"pretrain_run": "runs/pre", "checkpoints": [0, 2]}),
    ('kind = "remedies"\ntarget = "t"\nseeds = [0, 1]\n[remedy_params.pruning]\nfraction = 0.1\n',
     RemedySpec, {"seeds": [0, 1], "remedy_params": {"pruning": {"fraction": 0.1}}}),
])
def test_study_file_of_every_kind(tmp_path, text, cls, expect):
    path = tmp_path / "study.toml"
    path.write_text(text)
    spec = load_any(path)
    assert type(spec) is cls
    assert {k: getattr(spec, k) for k in expect} == expect
    cli = build_spec(cls, {k: v for k, v in spec.model_dump().items()})  # the keyword form
    assert cli == spec


def test_audit_is_the_default_kind_and_kinds_are_checked(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(DEMO_TOML)
    assert isinstance(load_any(path), StudySpec)
    path.write_text('kind = "audit"\n' + DEMO_TOML)
    assert load_any(path).models[0].name == "fine-tuned"
    path.write_text('kind = "nope"\n')
    with pytest.raises(ConfigError, match="unknown study kind 'nope'.*transferability"):
        load_any(path)
    path.write_text('kind = "transferability"\ntargets = ["a"]\nepohcs = 3\n')
    with pytest.raises(ConfigError, match="key 'epohcs'.*epochs"):
        load_any(path)
    path.write_text('kind = "block_shuffle"\nblock_sizes = []\n')
    with pytest.raises(ConfigError, match="block_sizes"):
        load_any(path)
    assert set(study_kinds()) == {"audit", "transferability", "block_shuffle", "ranking",
                                  "pretraining_checkpoints", "remedies"}


def test_keyword_forms_validate_before_training(tmp_path):
    from transferscope.studies.remedies import run_remedy_study
    from transferscope.studies.transferability import run_transferability

    with pytest.raises(ConfigError, match="key 'epochs'"):
        run_transferability("efficientnet_lite0", ["a"], tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="key 'seeds'"):
        run_remedy_study("t", tmp_path, seeds=[])
    assert not any(tmp_path.iterdir())


def test_audit_command_runs_every_kind_with_executor_override(tmp_path, capsys):
    """`transferscope audit FILE` dispatches on `kind`; `--executor` is validated like the
    file's key; a study's unknown recipe fails at parse time, before anything trains."""
    from transferscope.cli import main

    path = tmp_path / "shuffle.toml"
    path.write_text('kind = "block_shuffle"\ndata = "no-such-set"\nblock_sizes = [7]\n'
                    'image_size = 32\n')
    rc = main(["audit", str(path), "--out", str(tmp_path / "out"), "--executor", "local"])
    err = capsys.readouterr().err
    assert rc == 2 and "block size 7 does not divide the image size 32" in err
    assert err.count("\n") == 1 and not (tmp_path / "out" / "runs").exists()
    rc = main(["audit", str(path), "--out", str(tmp_path / "out"), "--executor", "slurm"])
    err = capsys.readouterr().err
    assert rc == 2 and "--executor: key 'executor'" in err and err.count("\n") == 1
    path.write_text(DEMO_TOML.replace('recipe = "paper000-scratch"', 'recipe = "paper000-scrach"'))
    with pytest.raises(ConfigError, match="models 'scratch-cnn' recipe: unknown recipe "
                                          "'paper000-scrach'"):
        load_any(path)


def test_a_study_kind_added_in_one_registration_runs_from_a_study_file(tmp_path, capsys):
    """A new kind: a spec and a run, registered once; `transferscope audit FILE` parses (with
    did-you-mean on its keys), runs it and ends in one StudyOutput."""
    from pydantic import BaseModel, ConfigDict

    from transferscope.cli import main
    from transferscope.studies import kinds

    class CountSpec(BaseModel):
        model_config = ConfigDict(extra="forbid")
        data: str
        top: int = 3

    def run(spec, out, data_root=None):
        from pathlib import Path

        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.html").write_text(f"<p>{spec.data} {spec.top}</p>")
        return {"count": spec.top}

    kinds.register_study_kind("count", CountSpec, run)
    try:
        path = tmp_path / "count.toml"
        path.write_text('kind = "count"\ndata = "hymenoptera"\ntop = 5\n')
        assert main(["audit", str(path), "--out", str(tmp_path / "out")]) == 0
        assert (tmp_path / "out" / "report.html").read_text() == "<p>hymenoptera 5</p>"
        output = kinds.run_kind(load_any(path), tmp_path / "again")
        assert output.results == {"count": 5} and output.report == tmp_path / "again" / \
            "report.html"
        path.write_text('kind = "count"\ndata = "x"\ntpo = 5\n')
        with pytest.raises(ConfigError, match="key 'tpo'.*top"):
            load_any(path)
        path.write_text('kind = "cuont"\n')
        with pytest.raises(ConfigError, match="did you mean 'count'"):
            load_any(path)
    finally:
        kinds._KINDS.pop("count")


#: the test that runs each registered study kind end to end from a study file (through
#: ``run_kind`` or ``transferscope audit FILE``); a new kind adds its own here
END_TO_END = {
    "audit": ("tests/report/test_study_report.py", "test_study_audit_report_and_guard"),
    "transferability": ("tests/analyses/test_transferability.py",
                        "test_transferability_study_end_to_end"),
    "block_shuffle": ("tests/analyses/test_what_is_transferred.py",
                      "test_block_shuffle_and_checkpoint_runners"),
    "pretraining_checkpoints": ("tests/analyses/test_what_is_transferred.py",
                                "test_block_shuffle_and_checkpoint_runners"),
    "remedies": ("tests/test_remedies.py", "test_remedy_study_end_to_end_on_held_out_halves"),
    "ranking": ("tests/studies/test_ranking_study.py",
                "test_ranking_study_writes_one_table_and_names_a_broken_candidate"),
}


def test_every_study_kind_runs_end_to_end_from_a_study_file():
    """Issue 25: each registered kind has a test that writes its study file, runs it through
    the kind's registration and reads its results and report."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[1]
    assert set(END_TO_END) == set(study_kinds())
    for kind, (path, name) in END_TO_END.items():
        text = (root / path).read_text()
        fn = next((f for f in ast.walk(ast.parse(text)) if isinstance(f, ast.FunctionDef)
                   and f.name == name), None)
        assert fn is not None, (kind, path, name)
        body = ast.get_source_segment(text, fn) if kind != "ranking" else text  # a helper
        assert "run_kind(" in body or '"audit"' in body, (kind, name)
        assert kind == "audit" or f'kind = "{kind}"' in body, (kind, name)

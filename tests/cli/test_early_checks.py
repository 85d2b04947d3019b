"""Every study kind checks what it can from its spec before the first training run: a bad
setting fails in well under a second, writes nothing and trains nothing."""

from __future__ import annotations

import time

import pytest

from transferscope.errors import ConfigError, DataError


@pytest.fixture
def no_training(monkeypatch):
    """Training fails the test: the checks must come first."""
    def refuse(*args, **kwargs):
        pytest.fail("a run was trained before the settings were checked")

    for mod in ("transferscope.engine.executor", "transferscope.studies.transferability",
                "transferscope.studies.training_runs", "transferscope.studies.remedies"):
        monkeypatch.setattr(f"{mod}.run_trainings", refuse, raising=False)
    monkeypatch.setattr("transferscope.data.fetch.ensure_sets", refuse)


def _fails_fast(tmp_path, call, error=ConfigError, match=""):
    t0 = time.perf_counter()
    with pytest.raises(error, match=match) as err:
        call()
    assert time.perf_counter() - t0 < 1.0
    assert not any(tmp_path.iterdir()), "nothing is written"
    assert "\n" not in str(err.value)
    return str(err.value)


def test_transferability_with_three_targets_fails_before_training(tmp_path, no_training,
                                                                    capsys):
    """The issue's command: three targets cannot fit eq. 3's four coefficients."""
    from transferscope.cli import main
    from transferscope.studies.transferability import run_transferability

    msg = _fails_fast(tmp_path, lambda: run_transferability(
        "efficientnet_lite0", ["hymenoptera", "chest-xray", "dtd"], tmp_path / "out"),
        match="fitting log T_FB needs at least 4 target tasks")
    assert "got 3 (hymenoptera, chest-xray, dtd)" in msg
    t0 = time.perf_counter()
    rc = main(["transferability", "hymenoptera", "chest-xray", "dtd", "--out",
               str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "fitting log T_FB needs at least 4 target tasks" in err
    assert time.perf_counter() - t0 < 1.0 and not any(tmp_path.iterdir())
    # two targets plus a sweep are three tasks too; one target skips the regression
    _fails_fast(tmp_path, lambda: run_transferability(
        "efficientnet_lite0", ["a", "b"], tmp_path / "out", fractions=[0.5]),
        match="at least 4 target tasks, got 3")


def test_transferability_checks_labels_arch_and_data_before_training(tmp_path, no_training):
    from transferscope.studies.transferability import run_transferability

    (tmp_path / "data" / "x" / "a").mkdir(parents=True)
    (tmp_path / "data" / "y" / "a").mkdir(parents=True)
    root = tmp_path / "data"
    before = set(tmp_path.iterdir())

    def fails(call, error=ConfigError, match=""):
        with pytest.raises(error, match=match):
            call()
        assert set(tmp_path.iterdir()) == before

    fails(lambda: run_transferability("efficientnet_lite0", [str(root / "x" / "a"),
                                                            str(root / "y" / "a")],
                                      tmp_path / "out"), match="labelled \\['a'\\]")
    fails(lambda: run_transferability("no-such-net", ["x"], tmp_path / "out",
                                      data_root=root), match="key 'arch'")
    fails(lambda: run_transferability("efficientnet_lite0", ["x"], tmp_path / "out",
                                      recipe="nope", data_root=root), match="key 'recipe'")
    fails(lambda: run_transferability("efficientnet_lite0", ["nowhere"], tmp_path / "out",
                                      data_root=root), DataError, "key 'targets\\[0\\]'")
    fails(lambda: run_transferability("efficientnet_lite0", ["x"], tmp_path / "out",
                                      source="nowhere", data_root=root), DataError,
          "key 'source'")
    fails(lambda: run_transferability("efficientnet_lite0", ["x"], tmp_path / "out",
                                      fractions=[1.5], data_root=root), match="'fractions'")


def test_remedies_pruning_without_standard_fails_before_training(tmp_path, no_training):
    """Pruning starts from the standard fine-tune: without it, the other remedies used to
    train first and the study failed afterwards."""
    from transferscope.studies.remedies import run_remedy_study

    _fails_fast(tmp_path, lambda: run_remedy_study(
        "t", tmp_path / "out", variants=["activation-l1", "pruning"], seeds=[0]),
        match="keep 'standard' in the variants")
    _fails_fast(tmp_path, lambda: run_remedy_study(
        str(tmp_path / "nowhere"), tmp_path / "out", variants=["standard"], seeds=[0]),
        DataError, "key 'target'")


def test_block_shuffle_checks_arch_and_data_before_training(tmp_path, no_training):
    from transferscope.studies.training_runs import run_block_shuffle

    _fails_fast(tmp_path, lambda: run_block_shuffle("no-such-net", "d", [8], tmp_path / "out",
                                                    image_size=32), match="key 'arch'")
    _fails_fast(tmp_path, lambda: run_block_shuffle(
        "efficientnet_lite0", str(tmp_path / "nowhere"), [8], tmp_path / "out",
        image_size=32), DataError, "key 'data'")


def test_audit_checks_transfer_roles_and_model_paths_before_training(tmp_path, no_training):
    """An audit whose transfer analyses have no P-T / RI-T model of the source architecture,
    or whose loaded model is missing, fails before downloading or training anything."""
    from transferscope.studies.demo_toml import DEMO_TOML
    from transferscope.studies.run import run_study
    from transferscope.studies.spec import parse_study

    spec = parse_study(DEMO_TOML)
    spec = spec.model_copy(update={"analyses": spec.analyses.model_copy(
        update={"transfer": "all"})})
    other = [m.model_copy(update={"arch": "baseline_cnn"}) for m in spec.models]
    _fails_fast(tmp_path, lambda: run_study(spec.model_copy(update={"models": other}),
                                            tmp_path / "out"),
                match="key 'analyses.transfer': papers 003/004 need models")
    gone = [spec.models[0].model_copy(update={"path": str(tmp_path / "gone"), "arch": None}),
            *spec.models[1:]]
    _fails_fast(tmp_path, lambda: run_study(spec.model_copy(update={"models": gone}),
                                            tmp_path / "out"),
                match="key models 'fine-tuned' path: .* does not exist")

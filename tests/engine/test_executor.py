"""Many-run executor (issue 17): local and Ray give the same weights; a killed worker resumes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from transferscope.engine import TrainConfig, get_recipe
from transferscope.engine.executor import TrainJob, run_trainings
from transferscope.engine.training import TrainingHook
from transferscope.errors import ConfigError


def _config(root, seed=0, epochs=2):
    return TrainConfig(arch="baseline_cnn", init="random", data=str(root), seed=seed,
                       recipe=get_recipe("paper000-scratch", epochs=epochs, image_size=32,
                                         batch_size=4, lr=1e-3))


class DieOnceInEpoch2(TrainingHook):
    """Kills its own process (``os._exit``: no clean-up, like a lost worker) on the first
    batch after epoch 1's checkpoint, once: ``marker`` records that it happened."""

    settings: dict = {}

    def __init__(self, run_dir: str, marker: str):
        self.run_dir, self.marker = run_dir, marker

    def batch(self, x, y, generator):
        done = len(list((Path(self.run_dir) / "checkpoints").glob("epoch_*.safetensors")))
        seen = f"{os.getpid()}:{done}"
        log = Path(self.marker + ".log")
        if seen not in (log.read_text().split() if log.exists() else []):
            with open(log, "a") as fh:  # which process trained after how many epochs
                fh.write(seen + "\n")
        if done == 1 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return x, y


def test_unknown_executor_and_bad_requests_are_one_line_errors(tiny_split, tmp_path):
    with pytest.raises(ConfigError, match="executor must be one of local, ray"):
        run_trainings([], executor="slurm")
    with pytest.raises(ConfigError, match="cpus must be >= 1"):
        run_trainings([TrainJob(_config(tiny_split), tmp_path / "a", cpus=0)])


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # the test module travels by value: Ray workers cannot import it from tests/
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 2**20,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TRANSFERSCOPE_PROGRESS": "0"}})
    yield ray
    ray.shutdown()


@pytest.mark.slow  # a Ray cluster starts: 15-35 s on 2 shared cores
def test_two_runs_on_ray_match_local_and_a_killed_worker_resumes(tiny_split, tmp_path,
                                                                  ray_cluster):
    # one thread in both: the summation order, and so the last bits, follow the thread count
    jobs = lambda base, **kw: [TrainJob(_config(tiny_split, seed=s), base / f"seed{s}", cpus=1,
                                        **kw) for s in (0, 1)]
    local = run_trainings(jobs(tmp_path / "local"), executor="local")
    on_ray = run_trainings(jobs(tmp_path / "ray"), executor="ray")
    assert [r.weights_sha256 for r in on_ray] == [r.weights_sha256 for r in local]
    assert local[0].weights_sha256 != local[1].weights_sha256  # two different runs
    assert [r.metrics for r in on_ray] == [r.metrics for r in local]
    for r in on_ray:  # the files on disk, written by the Ray workers, are the same
        assert (r.run_dir / "model.safetensors").read_bytes() == \
            (tmp_path / "local" / r.run_dir.name / "model.safetensors").read_bytes()

    # a worker that dies in epoch 2 (after epoch 1's checkpoint) is retried and resumes
    run, marker = tmp_path / "killed", tmp_path / "died.txt"
    job = TrainJob(_config(tiny_split, seed=0), run, cpus=1,
                   hook=DieOnceInEpoch2(str(run), str(marker)))
    (again,) = run_trainings([job], executor="ray", max_retries=2)
    assert marker.exists()  # it did die once
    assert again.weights_sha256 == local[0].weights_sha256
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics == local[0].metrics
    # the retry started from epoch 1's checkpoint: the dead worker trained epochs 1 and (the
    # start of) 2, the retry only epoch 2
    (first, n1), (_, n2), (retry, n3) = (e.split(":") for e in
                                         Path(f"{marker}.log").read_text().split())
    assert first == marker.read_text() != retry and (n1, n2, n3) == ("0", "1", "1")


def _two_run_study(root, executor):
    from transferscope.studies.spec import study_from_dict

    models = [{"name": f"cnn-s{s}", "arch": "baseline_cnn", "init": "random", "seed": s,
               "recipe": "paper000-scratch", "epochs": 2, "batch_size": 4, "lr": 1e-3}
              for s in (0, 1)]
    return study_from_dict({"image_size": 32, "target": {"data": str(root)}, "models": models,
                            "executor": executor, "run_cpus": 1}, "two-run study")


def test_study_executor_is_validated_and_reaches_the_jobs(tiny_split, tmp_path):
    from transferscope.studies.run import train_jobs
    from transferscope.studies.spec import study_from_dict

    with pytest.raises(ConfigError, match="key 'executor'"):
        study_from_dict({"target": {"data": "x"}, "models": [{"name": "a", "arch":
                         "baseline_cnn"}], "executor": "slurm"}, "s.toml")
    jobs = train_jobs(_two_run_study(tiny_split, "local"), tmp_path)
    assert list(jobs) == ["cnn-s0", "cnn-s1"]
    assert [j.cpus for j in jobs.values()] == [1, 1]
    assert [j.config.seed for j in jobs.values()] == [0, 1]


@pytest.mark.slow  # a Ray cluster starts
def test_a_two_run_study_on_ray_trains_the_same_models_as_locally(tiny_split, tmp_path,
                                                                    ray_cluster):
    from transferscope.studies.run import train_models

    local = train_models(_two_run_study(tiny_split, "local"), tmp_path / "local")
    on_ray = train_models(_two_run_study(tiny_split, "ray"), tmp_path / "ray")
    assert list(on_ray) == list(local) == ["cnn-s0", "cnn-s1"]
    assert [m.weights_hash() for m in on_ray.values()] == \
        [m.weights_hash() for m in local.values()]
    assert local["cnn-s0"].weights_hash() != local["cnn-s1"].weights_hash()

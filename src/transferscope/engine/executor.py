"""Many training runs at once: one after another here, or as Ray tasks on a cluster.

A study of many runs (paper 001's remedy study: 5 variants x 3 seeds; paper 002's
transferability study: 16 runs) hands its runs to :func:`run_trainings` as
:class:`TrainJob` s. ``executor="local"`` runs them in order in this process;
``executor="ray"`` submits each as a Ray task with the job's resource request
(``num_cpus``, ``num_gpus``), so a Ray cluster runs as many at once as its resources allow.

Every run is :func:`~transferscope.engine.training.train` with ``resume=True`` and the run
directory's writer lock, so:

* a task whose worker dies (killed, out of memory, node lost) is retried up to
  ``max_retries`` times and resumes from its last epoch checkpoint - training re-seeds each
  epoch, so the resumed run ends with the weights of an uninterrupted one;
* the results do not depend on the executor: the same job gives byte-identical weights
  locally and on Ray when it computes with the same number of torch threads in both (set
  ``cpus``; unset, a local run uses this process's threads and a Ray task one, and the last
  bits of the weights can differ with the summation order);
* two executors given the same run directory never train it twice at once.

Example:
    >>> jobs = [TrainJob(cfg, f"runs/seed{s}") for s, cfg in enumerate(configs)]  # doctest: +SKIP
    >>> [r.weights_sha256 for r in run_trainings(jobs, executor="ray")]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from transferscope.engine.training import TrainConfig, TrainingHook, train
from transferscope.errors import ConfigError

__all__ = ["EXECUTORS", "JobResult", "run_job", "run_trainings", "TrainJob"]

EXECUTORS = ("local", "ray")


@dataclass
class TrainJob:
    """The arguments of one :func:`~transferscope.engine.training.train` call, plus what it
    needs: ``cpus`` (torch threads, Ray ``num_cpus``; None: this process's threads locally,
    1 on Ray) and ``gpus`` (Ray ``num_gpus``)."""

    config: TrainConfig
    out: str | os.PathLike
    data_root: str | None = None
    num_workers: int = 0
    keep_checkpoints: int | None = None
    hook: TrainingHook | None = None
    cpus: int | None = None
    gpus: float = 0
    progress: bool | None = False  # None: a progress bar on a terminal
    extra: dict = field(default_factory=dict)  # other keyword arguments of train()


@dataclass
class JobResult:
    """What a finished run reports back (its files are in ``run_dir``)."""

    run_dir: Path
    weights_sha256: str
    metrics: list[dict]

    @property
    def final_val_accuracy(self) -> float:
        return self.metrics[-1]["val_acc"]


def run_job(job: TrainJob) -> JobResult:
    """Train one job in this process with ``job.cpus`` torch threads (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(job.cpus or threads)))
    try:
        res = train(job.config, job.out, resume=True, data_root=job.data_root,
                    num_workers=job.num_workers, keep_checkpoints=job.keep_checkpoints,
                    progress=job.progress, hook=job.hook, **job.extra)
    finally:
        torch.set_num_threads(threads)
    return JobResult(Path(job.out), res.model.weights_hash(), res.metrics)


def run_trainings(jobs: Sequence[TrainJob], executor: str = "local", *,
                  max_retries: int = 3, ray_address: str | None = None) -> list[JobResult]:
    """Run every job; results in the order of ``jobs``.

    Args:
        executor: ``"local"`` (in order, in this process) or ``"ray"`` (one Ray task per job;
            needs the ``ray`` extra: ``pip install transferscope[ray]``).
        max_retries: how often Ray re-runs a task whose worker process died; the retry
            resumes from the run's last checkpoint.
        ray_address: the cluster to join (default: ``RAY_ADDRESS``, else an already
            initialised Ray, else a local one on this machine's cores).

    Raises:
        ConfigError: an unknown executor, Ray missing, or a job asking for more than the
            cluster has.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    for job in jobs:
        if (job.cpus is not None and job.cpus < 1) or job.gpus < 0:
            raise ConfigError(f"job {job.out}: cpus must be >= 1 and gpus >= 0 "
                              f"(got cpus={job.cpus}, gpus={job.gpus})")
    # absolute run directories: Ray workers run elsewhere (on a cluster: a shared file system)
    jobs = [replace(job, out=Path(job.out).resolve()) for job in jobs]
    if executor == "local":
        return [run_job(job) for job in jobs]
    # a Ray task computes with its own CPUs: one unless asked; no callbacks into this process
    return _run_on_ray([replace(job, cpus=job.cpus or 1, progress=False,
                                extra={k: v for k, v in job.extra.items() if k != "on_epoch"})
                        for job in jobs], max_retries, ray_address)


def _run_on_ray(jobs: list[TrainJob], max_retries: int, address: str | None) -> list[JobResult]:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs Ray: pip install 'transferscope[ray]' (or "
                          "use executor 'local')") from None
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False)
    total = ray.cluster_resources()
    for job in jobs:
        if job.cpus > total.get("CPU", 0) or job.gpus > total.get("GPU", 0):
            raise ConfigError(f"job {job.out} asks for {job.cpus} CPUs and {job.gpus} GPUs but "
                              f"the Ray cluster has {total.get('CPU', 0):g} and "
                              f"{total.get('GPU', 0):g}; lower the request or add nodes")
    task = ray.remote(run_job)
    refs = [task.options(num_cpus=job.cpus, num_gpus=job.gpus, max_retries=max_retries,
                         retry_exceptions=False, name=f"train {Path(job.out).name}").remote(job)
            for job in jobs]
    return ray.get(refs)

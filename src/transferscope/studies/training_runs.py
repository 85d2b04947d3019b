"""Paper 003's training experiments: block-shuffled inputs (section 3.1, Fig. 3) and
fine-tuning from pre-training checkpoints (section 3.5, Fig. 7).

Both train pairs or series of runs (resumable, under ``out/runs``) and report final accuracy
and optimisation speed - the mean training accuracy over the epochs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from transferscope import roles
from transferscope._paths import run_dir
from transferscope._progress import log
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.block_shuffle import block_shuffle_result, optimisation_speed
from transferscope.analyses.pretraining_checkpoints import checkpoints_result
from transferscope.engine import TrainConfig, get_recipe
from transferscope.engine.executor import TrainJob, run_trainings
from transferscope.errors import ConfigError
from transferscope.report import write_report
from transferscope.studies.spec import ExecutorFields, check_runs

__all__ = ["BlockShuffleSpec", "CheckpointSpec", "run", "run_block_shuffle",
           "run_checkpoint_transfer"]


class _Runs(ExecutorFields):
    model_config = ConfigDict(extra="forbid")

    data: str = Field("hymenoptera", description="target data set (ImageFolder train/val)")
    image_size: int = Field(64, ge=8)
    epochs: int = Field(3, ge=1)
    recipe: str = "paper002"
    batch_size: int = Field(32, ge=1)
    seed: int = 0


class BlockShuffleSpec(_Runs):
    """Paper 003, section 3.1: P-T vs RI-T on block-shuffled inputs."""

    kind: Literal["block_shuffle"] = "block_shuffle"
    arch: str = "efficientnet_lite0"
    block_sizes: list[int | Literal["*"]] = Field(
        default_factory=lambda: [64, 16, 4, 1, "*"], min_length=1,
        description="block sizes dividing image_size; '*' mixes channels")


class CheckpointSpec(_Runs):
    """Paper 003, section 3.5: fine-tune from the checkpoints of a pre-training run."""

    kind: Literal["pretraining_checkpoints"] = "pretraining_checkpoints"
    pretrain_run: str = Field(description="run directory of a pre-training run")
    checkpoints: list[int] | None = Field(None, description="epochs to start from (default: "
                                          "all saved)")


def run(spec: BlockShuffleSpec | CheckpointSpec, out: str | os.PathLike, data_root=None
        ) -> AnalysisResult:
    """Train the runs of ``spec`` that are missing under ``out/runs`` and write the result."""
    settings = spec.model_dump(exclude={"kind"})
    settings["execution"] = {k: settings.pop(k) for k in ExecutorFields.model_fields}
    if isinstance(spec, BlockShuffleSpec):
        return run_block_shuffle(settings.pop("arch"), settings.pop("data"),
                                 settings.pop("block_sizes"), out, **settings,
                                 data_root=data_root)
    return run_checkpoint_transfer(settings.pop("pretrain_run"), settings.pop("data"), out,
                                   **settings, data_root=data_root)


def _train_all(jobs: dict, data_root, execution: dict | None) -> dict:
    """``{key: (config, run_dir)}`` trained (or resumed) through the executor of
    ``execution``; returns ``{key: JobResult}``."""
    ex = execution or {}
    todo = [TrainJob(cfg, run, data_root=data_root, keep_checkpoints=1, progress=None,
                     cpus=ex.get("run_cpus"), gpus=ex.get("run_gpus", 0))
            for cfg, run in jobs.values()]
    return dict(zip(jobs, run_trainings(todo, executor=ex.get("executor", "local"))))


def run_block_shuffle(arch: str, data: str, block_sizes: list, out: str | os.PathLike, *,
                      image_size: int = 64, epochs: int = 3, recipe: str = "paper002",
                      batch_size: int = 32, seed: int = 0, data_root=None,
                      execution: dict | None = None) -> AnalysisResult:
    """P-T and RI-T on block-shuffled copies of ``data`` for every block size;
    ``execution``: :class:`~transferscope.studies.spec.ExecutorFields` settings."""
    out = Path(out)
    rows, jobs = [], {}
    for b in block_sizes:  # everything checkable fails before the first run
        if b != "*" and image_size % int(b):
            raise ConfigError(f"block size {b} does not divide the image size {image_size}; "
                              "choose divisors of --image-size or '*'")
    check_runs(arch=arch, recipe=recipe, recipe_args={
        "epochs": epochs, "image_size": image_size, "batch_size": batch_size},
        data={"data": data}, data_root=data_root)
    for b in block_sizes:
        for kind in (roles.PT, roles.RIT):
            cfg = TrainConfig(arch=arch, init=roles.INIT[kind], data=data, seed=seed, block_shuffle=b,
                              recipe=get_recipe(recipe, epochs=epochs, image_size=image_size,
                                                batch_size=batch_size))
            jobs[b, kind] = (cfg, run_dir(out, f"block{b if b != '*' else 'star'}-{kind}"))
    log(f"[bold]block shuffling[/bold]: {len(jobs)} runs")
    done = _train_all(jobs, data_root, execution)
    for b in block_sizes:
        res = {kind: done[b, kind] for kind in (roles.PT, roles.RIT)}
        a_pt, a_rit = res[roles.PT].final_val_accuracy, res[roles.RIT].final_val_accuracy
        rows.append({"block size": str(b), "accuracy P-T": a_pt, "accuracy RI-T": a_rit,
                     "relative drop %": 100 * (a_pt - a_rit) / a_pt if a_pt else float("nan"),
                     "speed P-T": optimisation_speed(res[roles.PT].metrics),
                     "speed RI-T": optimisation_speed(res[roles.RIT].metrics)})
    result = block_shuffle_result(rows, f"{arch} on {data} at {image_size}px, {epochs} "
                                  f"epochs ({recipe})")
    result.save(out)
    write_report(out, {"block_shuffle": result}, title=f"block shuffling: {arch} on {data}")
    return result


def run_checkpoint_transfer(pretrain_run: str | os.PathLike, data: str,
                            out: str | os.PathLike, *, checkpoints: list[int] | None = None,
                            image_size: int = 64, epochs: int = 3, recipe: str = "paper002",
                            batch_size: int = 32, seed: int = 0, data_root=None,
                            execution: dict | None = None) -> AnalysisResult:
    """Fine-tune on ``data`` from epoch checkpoints of a pre-training run (section 3.5)."""
    pre = Path(pretrain_run)
    cfg_path = pre / "config.json"
    if not cfg_path.exists():
        raise ConfigError(f"{pre} is not a training run directory (no config.json); pre-train "
                          "with `transferscope train ... --out DIR` first")
    arch = json.loads(cfg_path.read_text())["config"]["arch"]
    metrics = json.loads((pre / "metrics.json").read_text())
    available = sorted(int(p.stem.split("_")[1]) for p in (pre / "checkpoints").glob("epoch_*"))
    if (pre / "init.safetensors").is_file():
        available = [0] + available  # epoch 0 = the run's starting weights, always included
    chosen = [c for c in (checkpoints or available) if c != 0]
    missing = [c for c in chosen if c not in available]
    if missing:
        raise ConfigError(f"{pre} has no checkpoints for epochs {missing}; it has {available}"
                          " (pre-train with `transferscope train --keep-epochs "
                          f"{','.join(map(str, missing))}` or --keep-checkpoints all)")
    check_runs(recipe=recipe, recipe_args={"epochs": epochs, "image_size": image_size,
                                           "batch_size": batch_size},
               data={"data": data}, data_root=data_root)
    rows, out, jobs = [], Path(out), {}
    for c in [0] + chosen:
        init = str(pre / ("init.safetensors" if c == 0 else
                          f"checkpoints/epoch_{c:04d}.safetensors"))
        cfg = TrainConfig(arch=arch, init=init, data=data, seed=seed,
                          recipe=get_recipe(recipe, epochs=epochs, image_size=image_size,
                                            batch_size=batch_size))
        jobs[c] = (cfg, run_dir(out, f"from-epoch{c:04d}"))
    log(f"[bold]fine-tuning from {len(jobs)} checkpoints[/bold]")
    done = _train_all(jobs, data_root, execution)
    for c in [0] + chosen:
        res = done[c]
        rows.append({"pre-training epoch": c,
                     "pre-training val accuracy": metrics[c - 1]["val_acc"] if c else
                     float("nan"),
                     "final accuracy": res.final_val_accuracy,
                     "optimisation speed": optimisation_speed(res.metrics)})
    result = checkpoints_result(rows, f"pre-training run {pre}")
    result.save(out)
    write_report(out, {"pretraining_checkpoints": result},
                 title=f"fine-tuning from pre-training checkpoints of {pre.name}")
    return result

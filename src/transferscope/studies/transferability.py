"""Paper 002 end to end: for each target set (and sub-sampled variants), a fine-tune and a
from-scratch run from the same random start theta_r; then layer-wise transferability, domain
gap and width, the regression of log T on them, and layer-wise gradients - one report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch
from pydantic import ConfigDict, Field

from transferscope import roles
from transferscope._paths import run_dir
from transferscope._progress import log
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses.domain import domain_statistics
from transferscope.analyses.layer_gradients import gradient_profiles
from transferscope.analyses.transferability import network_transferability, transferability_result
from transferscope.analyses.transferability_factors import COEFFICIENTS, fit_factors
from transferscope.data import eval_transform, image_folder, source_images
from transferscope.engine import TrainConfig, get_recipe, load_run
from transferscope.engine.executor import TrainJob, run_trainings
from transferscope.engine.training import select_subset
from transferscope.errors import ConfigError
from transferscope.report import write_report
from transferscope.studies.spec import ExecutorFields, build_spec, check_runs

__all__ = ["check", "run", "run_transferability", "TransferabilitySpec"]


def _variants(targets, fractions, class_counts, sweep_target):
    out = [(t, 1.0, None) for t in targets]
    sweep = sweep_target or (targets[0] if targets else None)
    out += [(sweep, f, None) for f in fractions if f < 1.0]
    out += [(sweep, 1.0, k) for k in class_counts]
    return out


def _label(target, fraction, classes):
    name = Path(target).name
    if fraction < 1.0:
        name += f"@{fraction:g}N"
    if classes:
        name += f"@{classes}cls"
    return name


class TransferabilitySpec(ExecutorFields):
    """Settings of a paper-002 study (the CLI's ``transferability`` options or a TOML file)."""

    model_config = ConfigDict(extra="forbid")

    arch: str = "efficientnet_lite0"
    targets: list[str] = Field(min_length=1, description="target data sets (ImageFolder with "
                               "train/val)")
    source: str = Field("imagenet-samples", description="source images for the domain gap")
    image_size: int = Field(128, ge=8)
    epochs: int = Field(5, ge=1)
    recipe: str = "paper002"
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    fractions: list[float] = Field(default_factory=list, description="data-amount sweep, "
                                   "e.g. [0.25, 0.5]")
    class_counts: list[int] = Field(default_factory=list, description="width sweep (number "
                                    "of classes)")
    sweep_target: str | None = Field(None, description="set for the sweeps (default: first)")
    domain_limit: int | None = Field(300, ge=1, description="images per set in the domain "
                                     "features")


def run_transferability(arch: str, targets: list[str], out: str | os.PathLike, *,
                        data_root=None, **settings) -> dict[str, AnalysisResult]:
    """Keyword form of :func:`run`: ``settings`` are :class:`TransferabilitySpec` fields."""
    spec = build_spec(TransferabilitySpec, {"arch": arch, "targets": list(targets),
                                            **settings}, "transferability study")
    return run(spec, out, data_root)


def check(spec: TransferabilitySpec, data_root=None) -> None:
    """What can fail without training, checked before the first run: enough target tasks
    for the regression (eq. 3 fits 4 coefficients), distinct labels, the architecture, the
    recipe and the data sets."""
    variants = _variants(spec.targets, spec.fractions, spec.class_counts, spec.sweep_target)
    labels = [_label(*v) for v in variants]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ConfigError(f"key 'targets': several target tasks are labelled {twice} (the "
                          "folder name); give sets with different folder names")
    if 2 <= len(variants) < len(COEFFICIENTS):
        raise ConfigError(
            f"fitting log T_FB needs at least {len(COEFFICIENTS)} target tasks, got "
            f"{len(variants)} ({', '.join(labels)}): add target sets or sweep variants "
            "(fractions / class_counts), or give a single target to skip the regression")
    bad = [f for f in spec.fractions if not 0 < f <= 1]
    if bad:
        raise ConfigError(f"key 'fractions': {bad} outside (0, 1]; give fractions of the "
                          "training images, e.g. 0.25,0.5")
    bad = [k for k in spec.class_counts if k < 2]
    if bad:
        raise ConfigError(f"key 'class_counts': {bad}; give class counts of at least 2")
    check_runs(arch=spec.arch, recipe=spec.recipe, recipe_args={
        "epochs": spec.epochs, "image_size": spec.image_size, "batch_size": spec.batch_size},
        data={**{f"targets[{i}]": t for i, t in enumerate(spec.targets)},
              **({"sweep_target": spec.sweep_target} if spec.sweep_target else {}),
              "source": spec.source}, data_root=data_root)


def run(spec: TransferabilitySpec, out: str | os.PathLike, data_root=None
        ) -> dict[str, AnalysisResult]:
    """Train what is missing under ``out/runs`` (resumable), analyse, write ``out``."""
    check(spec, data_root)
    out = Path(out)
    arch, targets, image_size, epochs = spec.arch, spec.targets, spec.image_size, spec.epochs
    recipe, batch_size, seed = spec.recipe, spec.batch_size, spec.seed
    fractions, class_counts, sweep_target = spec.fractions, spec.class_counts, spec.sweep_target
    rows, per_target, grad_runs = [], {}, {}
    domain_sets = {}
    variants = _variants(targets, fractions, class_counts, sweep_target)
    jobs = {}
    for target, fraction, classes in variants:
        label = _label(target, fraction, classes)
        for kind in (roles.PT, roles.RIT):
            cfg = TrainConfig(arch=arch, init=roles.INIT[kind], data=target, seed=seed,
                              data_fraction=fraction, max_classes=classes,
                              recipe=get_recipe(recipe, epochs=epochs, image_size=image_size,
                                                batch_size=batch_size))
            jobs[label, kind] = TrainJob(cfg, run_dir(out, f"{label}-{roles.FOLDER[kind]}", slug=True),
                                         data_root=data_root, keep_checkpoints=1,
                                         cpus=spec.run_cpus, gpus=spec.run_gpus, progress=None)
    log(f"[bold]training[/bold] {len(jobs)} runs ({spec.executor} executor)")
    done = dict(zip(jobs, run_trainings(list(jobs.values()), executor=spec.executor)))
    for target, fraction, classes in variants:
        label = _label(target, fraction, classes)
        ft, sc = done[label, roles.PT], done[label, roles.RIT]
        theta_a = load_run(ft.run_dir, "init")
        theta_r = load_run(sc.run_dir, "init_random")
        res = network_transferability(theta_a, theta_a.state_dict(), theta_r.state_dict(),
                                      load_run(ft.run_dir).state_dict(),
                                      load_run(sc.run_dir).state_dict(), label=label)
        per_target[label] = res
        train_set, _ = select_subset(image_folder(target, "train", data_root=data_root),
                                     image_folder(target, "val", data_root=data_root),
                                     fraction, classes, seed)
        domain_sets[label] = train_set
        rows.append({"target": label, "N": len(train_set), "classes": train_set.num_classes,
                     "acc scratch": sc.final_val_accuracy, "acc fine-tuned": ft.final_val_accuracy,
                     "T_FB": res.summary["T_FB"], "T_SB": res.summary["T_SB"]})
        if fraction == 1.0 and not classes:
            loader = torch.utils.data.DataLoader(
                train_set.with_transform(eval_transform(theta_a.norm, image_size)),
                batch_size=batch_size, shuffle=False)
            grad_runs[label] = (theta_a, loader)
    src = source_images(spec.source, data_root=data_root)
    dom = domain_statistics(domain_sets, src, limit=spec.domain_limit, seed=seed)
    table = pd.DataFrame(rows).merge(dom.tables["domains"][["target", "gap", "width"]],
                                     on="target")
    table = table[["target", "gap", "width", "N", "classes", "acc scratch", "acc fine-tuned",
                   "T_FB", "T_SB"]]
    trans = transferability_result(per_target, table, [
        f"{arch} at {image_size}px, recipe {recipe} with {epochs} epochs, batch "
        f"{batch_size}, seed {seed}; fine-tune and scratch share theta_r."])
    found = [trans, dom]
    if len(table) >= 2:
        found.append(fit_factors(table))
    if grad_runs:
        found.append(gradient_profiles(grad_runs, max_batches=4))
    results = {r.name: r for r in found}
    for res in results.values():
        res.save(out)
    write_report(out, results, title=f"transferability of {arch} (paper 002)")
    return results

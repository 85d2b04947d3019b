"""Study commands of the ``transferscope`` CLI (papers 002/003 runners and the remedies)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from transferscope.cli._app import SPLIT_DATA_HELP, DataRoot, app

ExecutorOpt = typer.Option("local", "--executor", help="where the training runs execute: local "
                           "(one after another here) or ray (one Ray task each)")
from transferscope.errors import ConfigError

__all__ = ["block_shuffle_cmd", "checkpoint_transfer_cmd", "ExecutorOpt", "remedies_cmd",
           "transferability_cmd"]


@app.command("transferability")
def transferability_cmd(
    targets: list[str] = typer.Argument(..., help="target data sets, each " + SPLIT_DATA_HELP),
    out: Path = typer.Option(..., help="output folder (runs/, results/, figures/, report)"),
    arch: str = typer.Option("efficientnet_lite0"),
    source: str = typer.Option("imagenet-samples", help="source images for the domain gap"),
    image_size: int = typer.Option(128),
    epochs: int = typer.Option(5),
    recipe: str = typer.Option("paper002"),
    batch_size: int = typer.Option(32),
    seed: int = typer.Option(0),
    fractions: str = typer.Option("", help="data-amount sweep, e.g. 0.25,0.5"),
    class_counts: str = typer.Option("", help="width sweep (number of classes), e.g. 3,5"),
    sweep_target: Optional[str] = typer.Option(None, help="set for the sweeps (default: first)"),
    data_root: Optional[Path] = DataRoot, executor: str = ExecutorOpt,
):
    """Paper 002: layer-wise transferability, domain gap/width, regression, gradients."""
    from transferscope.studies.transferability import run_transferability

    res = run_transferability(
        arch, targets, out, source=source, image_size=image_size, epochs=epochs, recipe=recipe,
        batch_size=batch_size, seed=seed,
        fractions=tuple(float(f) for f in fractions.split(",") if f),
        class_counts=tuple(int(c) for c in class_counts.split(",") if c),
        sweep_target=sweep_target, executor=executor, data_root=data_root)
    typer.echo(res["transferability"].tables["table2"].to_string(index=False))
    typer.echo(f"report: {out / 'report.html'}")


@app.command("block-shuffle")
def block_shuffle_cmd(
    data: str = typer.Option("hymenoptera", help="target data set " + SPLIT_DATA_HELP),
    out: Path = typer.Option(...),
    arch: str = typer.Option("efficientnet_lite0"),
    block_sizes: str = typer.Option("64,16,4,1,*", help="comma-separated; '*' mixes channels"),
    image_size: int = typer.Option(64), epochs: int = typer.Option(3),
    recipe: str = typer.Option("paper002"), seed: int = typer.Option(0),
    data_root: Optional[Path] = DataRoot, executor: str = ExecutorOpt):
    """Paper 003, section 3.1: P-T vs RI-T on block-shuffled inputs."""
    from transferscope.studies.training_runs import run_block_shuffle

    sizes = [b if b == "*" else int(b) for b in block_sizes.split(",") if b]
    res = run_block_shuffle(arch, data, sizes, out, image_size=image_size, epochs=epochs,
                            recipe=recipe, seed=seed, data_root=data_root,
                            execution=_execution(executor))
    typer.echo(res.tables["accuracy"].to_string(index=False))


@app.command("checkpoint-transfer")
def checkpoint_transfer_cmd(
    pretrain_run: Path = typer.Option(..., help="run directory of a pre-training run"),
    data: str = typer.Option("hymenoptera", help="target data set " + SPLIT_DATA_HELP),
    out: Path = typer.Option(...),
    checkpoints: str = typer.Option("", help="epochs to start from (default: all saved)"),
    image_size: int = typer.Option(64), epochs: int = typer.Option(3),
    recipe: str = typer.Option("paper002"), seed: int = typer.Option(0),
    data_root: Optional[Path] = DataRoot, executor: str = ExecutorOpt):
    """Paper 003, section 3.5: fine-tune from several pre-training checkpoints."""
    from transferscope.studies.training_runs import run_checkpoint_transfer

    res = run_checkpoint_transfer(pretrain_run, data, out,
                                  checkpoints=[int(c) for c in checkpoints.split(",") if c] or None,
                                  image_size=image_size, epochs=epochs, recipe=recipe, seed=seed,
                                  data_root=data_root, execution=_execution(executor))
    typer.echo(res.tables["checkpoints"].to_string(index=False))


@app.command("remedies")
def remedies_cmd(
    target: str = typer.Option("hymenoptera", help="target data set " + SPLIT_DATA_HELP),
    out: Path = typer.Option(..., help="output folder (runs/, audit/, results/, report.html)"),
    arch: str = typer.Option("efficientnet_lite0"),
    variants: str = typer.Option(",".join(["standard", "composite-augmentation", "activation-l1",
                                           "lingering-suppression", "pruning"]),
                                 help="comma-separated: standard and remedies"),
    seeds: int = typer.Option(3, help="seeds 0..N-1"),
    epochs: int = typer.Option(5), image_size: int = typer.Option(128),
    recipe: str = typer.Option("paper002"),
    batch_size: Optional[int] = typer.Option(None, help="override the recipe's batch size"),
    lr: Optional[float] = typer.Option(None, help="override the recipe's learning rate"),
    composite_style: str = typer.Option("paper000", help="evaluation composites: paper000 "
                                        "(overlay 10 % of the image) or paper001 (16 %)"),
    param: list[str] = typer.Option([], help="a remedy setting, KIND.KEY=VALUE (JSON value), "
                                    "e.g. composite-augmentation.fraction=0.25; repeat"),
    prune_epochs: int = typer.Option(2, help="fine-tuning epochs after pruning"),
    source: str = typer.Option("imagenet-samples", help="ImageNet-labelled source images"),
    views: int = typer.Option(2, help="views per held-out source image"),
    data_root: Optional[Path] = DataRoot, executor: str = ExecutorOpt):
    """Remedies for lingering memories: standard fine-tuning vs each remedy, over seeds."""
    from transferscope.studies.remedies import run_remedy_study

    res = run_remedy_study(target, out, arch=arch, recipe=recipe, epochs=epochs,
                           remedy_params=_remedy_params(param),
                           image_size=image_size, seeds=tuple(range(seeds)),
                           variants=[v for v in variants.split(",") if v],
                           prune_epochs=prune_epochs, source=source, views=views,
                           batch_size=batch_size, lr=lr,
                           composite_params={"style": composite_style}, executor=executor,
                           data_root=data_root)
    typer.echo(res.tables["summary"].to_string(index=False))
    typer.echo(f"report: {Path(out) / 'report.html'}")


def _execution(executor: str) -> dict:
    """``--executor`` as the ``execution`` settings of the paper 003 runners (validated)."""
    from transferscope.studies.spec import ExecutorFields, build_spec

    return build_spec(ExecutorFields, {"executor": executor}, "--executor").model_dump()


def _remedy_params(items: list[str]) -> dict[str, dict]:
    """``["composite-augmentation.fraction=0.25"]`` -> ``{kind: {key: 0.25}}``."""
    out: dict[str, dict] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        kind, dot, key = target.partition(".")
        if not sep or not dot or not kind or not key:
            raise ConfigError(f"--param {item!r}: write KIND.KEY=VALUE, e.g. "
                              "composite-augmentation.fraction=0.25")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(kind, {})[key] = value
    return out


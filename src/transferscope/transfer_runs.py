"""Paper 003's training experiments: block-shuffled inputs (section 3.1, Fig. 3) and
fine-tuning from pre-training checkpoints (section 3.5, Fig. 7).

Both train pairs or series of runs (resumable, under ``out/runs``) and report final accuracy
and optimisation speed - the mean training accuracy over the epochs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from transferscope._progress import log
from transferscope.analyses._base import AnalysisResult
from transferscope.engine import TrainConfig, get_recipe, train
from transferscope.errors import ConfigError
from transferscope.report import write_report


def optimisation_speed(metrics: list[dict]) -> float:
    """Mean training accuracy over all epochs (paper 003, Fig. 3 right)."""
    return sum(m["train_acc"] for m in metrics) / len(metrics)


def run_block_shuffle(arch: str, data: str, block_sizes: list, out: str | os.PathLike, *,
                      image_size: int = 64, epochs: int = 3, recipe: str = "paper002",
                      batch_size: int = 32, seed: int = 0, data_root=None) -> AnalysisResult:
    """P-T and RI-T on block-shuffled copies of ``data`` for every block size."""
    out = Path(out)
    rows = []
    for b in block_sizes:
        if b != "*" and image_size % int(b):
            raise ConfigError(f"block size {b} does not divide the image size {image_size}; "
                              "choose divisors of --image-size or '*'")
        res = {}
        for kind, init in (("P-T", "imagenet"), ("RI-T", "random")):
            log(f"[bold]block {b}[/bold]: {kind}")
            cfg = TrainConfig(arch=arch, init=init, data=data, seed=seed, block_shuffle=b,
                              recipe=get_recipe(recipe, epochs=epochs, image_size=image_size,
                                                batch_size=batch_size))
            res[kind] = train(cfg, out / "runs" / f"block{b if b != '*' else 'star'}-{kind}",
                              resume=True, data_root=data_root, keep_checkpoints=1)
        a_pt, a_rit = res["P-T"].final_val_accuracy, res["RI-T"].final_val_accuracy
        rows.append({"block size": str(b), "accuracy P-T": a_pt, "accuracy RI-T": a_rit,
                     "relative drop %": 100 * (a_pt - a_rit) / a_pt if a_pt else float("nan"),
                     "speed P-T": optimisation_speed(res["P-T"].metrics),
                     "speed RI-T": optimisation_speed(res["RI-T"].metrics)})
    table = pd.DataFrame(rows)
    result = AnalysisResult("block_shuffle", {r["block size"]: r for r in rows},
                            {"accuracy": table}, notes=[
        f"{arch} on {data} at {image_size}px, {epochs} epochs ({recipe}); one fixed block "
        "permutation per block size (seeded), applied to training and validation images; "
        "speed = mean training accuracy over the epochs."])
    result.figures["accuracy"] = _bars(table)
    result.save(out)
    write_report(out, {"block_shuffle": result}, title=f"block shuffling: {arch} on {data}")
    return result


def run_checkpoint_transfer(pretrain_run: str | os.PathLike, data: str,
                            out: str | os.PathLike, *, checkpoints: list[int] | None = None,
                            image_size: int = 64, epochs: int = 3, recipe: str = "paper002",
                            batch_size: int = 32, seed: int = 0, data_root=None
                            ) -> AnalysisResult:
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
        raise ConfigError(f"{pre} has no checkpoints for epochs {missing}; it has {available}")
    rows, out = [], Path(out)
    for c in [0] + chosen:
        init = str(pre / ("init.safetensors" if c == 0 else
                          f"checkpoints/epoch_{c:04d}.safetensors"))
        cfg = TrainConfig(arch=arch, init=init, data=data, seed=seed,
                          recipe=get_recipe(recipe, epochs=epochs, image_size=image_size,
                                            batch_size=batch_size))
        log(f"[bold]fine-tune from checkpoint {c}[/bold]")
        res = train(cfg, out / "runs" / f"from-epoch{c:04d}", resume=True, data_root=data_root,
                    keep_checkpoints=1)
        rows.append({"pre-training epoch": c,
                     "pre-training val accuracy": metrics[c - 1]["val_acc"] if c else
                     float("nan"),
                     "final accuracy": res.final_val_accuracy,
                     "optimisation speed": optimisation_speed(res.metrics)})
    table = pd.DataFrame(rows)
    result = AnalysisResult("pretraining_checkpoints", {str(r["pre-training epoch"]): r
                                                        for r in rows}, {"checkpoints": table},
                            notes=[f"pre-training run {pre}; epoch 0 = its random init."])
    result.save(out)
    write_report(out, {"pretraining_checkpoints": result},
                 title=f"fine-tuning from pre-training checkpoints of {pre.name}")
    return result


def _bars(table: pd.DataFrame):
    from transferscope.analyses._plots import subplots

    fig, axes = subplots(1, 2, figsize=(9, 3.2))
    x = range(len(table))
    for ax, (a, b, title) in zip(axes, (("accuracy P-T", "accuracy RI-T", "final accuracy"),
                                        ("speed P-T", "speed RI-T", "optimisation speed"))):
        ax.bar([i - 0.2 for i in x], table[a], width=0.4, alpha=0.5, label="P-T")
        ax.bar([i + 0.2 for i in x], table[b], width=0.4, label="RI-T")
        ax.set_xticks(list(x))
        ax.set_xticklabels(table["block size"])
        ax.set_xlabel("block size")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

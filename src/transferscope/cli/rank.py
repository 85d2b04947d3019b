"""``transferscope rank``: score candidate source models for a target before fine-tuning. The
options become a ``kind = "ranking"`` study (:class:`~transferscope.studies.ranking.RankingSpec`)
run by :func:`transferscope.studies.ranking.run`, so the command writes what the study writes:
``OUT/results/ranking__scores.csv`` (a row per candidate, a column per score),
``OUT/results/ranking.json``, the findings, ``OUT/study.toml`` (the study: a rerun) and
``OUT/report.html``; it prints the table. With ``--accuracy`` (fine-tuned accuracies you have)
or ``--fine-tune RECIPE`` (fine-tune each here), also how well each score ranks them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from transferscope.cli._app import DataRoot, app
from transferscope.errors import ConfigError

__all__ = ["CANDIDATE_HELP", "parse_candidates", "rank"]
CANDIDATE_HELP = ("NAME=MODEL[@INIT], repeatable: MODEL a registered architecture, timm:<name>, "
                  "torchvision:<name>, hf:<folder>, a run directory or a .safetensors file; "
                  "INIT imagenet (default) | random | PATH. E.g. lite0=efficientnet_lite0, "
                  "r18=timm:resnet18@random")


def parse_candidates(items: list[str]) -> dict[str, tuple[str, str]]:
    """``{"name": (model, init)}`` from ``NAME=MODEL[@INIT]`` items.

    >>> parse_candidates(["a=efficientnet_lite0", "b=timm:resnet18@random"])
    {'a': ('efficientnet_lite0', 'imagenet'), 'b': ('timm:resnet18', 'random')}
    """
    out: dict[str, tuple[str, str]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise ConfigError(f"--candidate {item!r}: write NAME=MODEL[@INIT], e.g. "
                              "lite0=efficientnet_lite0 or r18=timm:resnet18@random")
        if name in out:
            raise ConfigError(f"--candidate {name!r} is given twice; give each a new name")
        model, _, init = spec.partition("@")
        out[name] = (model.strip(), init.strip() or "imagenet")
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)


@app.command("rank")
def rank(target: str = typer.Option(..., help="target data set: a name under the data root, "
                                    "a folder or a CSV (path,label[,split])"),
         candidate: List[str] = typer.Option(..., help=CANDIDATE_HELP),
         out: Path = typer.Option(..., help="output folder: results/ranking__scores.csv, "
                                  "study.toml, report.html"),
         split: Optional[str] = typer.Option("train", help="the target's training split "
                                             "(sub-folder or CSV split); '' for all of it"),
         accuracy: List[str] = typer.Option([], help="NAME=ACC fine-tuned accuracy of a "
                                            "candidate (repeatable): then each score's "
                                            "weighted Kendall tau and Pearson r against it"),
         fine_tune: Optional[str] = typer.Option(None, help="RECIPE: fine-tune every candidate "
                                                 "given by name with this recipe "
                                                 "(`transferscope recipes`) for ground truth"),
         epochs: Optional[int] = typer.Option(None, min=1, help="with --fine-tune: override "
                                              "the recipe's epochs"),
         val_split: str = typer.Option("val", help="with --fine-tune: the split its accuracy "
                                       "is measured on"),
         executor: str = typer.Option("local", help="with --fine-tune: local | ray"),
         image_size: Optional[int] = typer.Option(None, help="input side (default: each "
                                                  "model's own)"),
         batch_size: Optional[int] = typer.Option(None),
         device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
         source: str = typer.Option("imagenet-samples", help="ImageNet-labelled source "
                                    "sample for the target's domain gap and width (paper "
                                    "002's factors, context); '' to skip"),
         data_root: Optional[Path] = DataRoot):
    """Rank candidate source models for a target from one forward pass each (LogME, LEEP,
    NCE, H-score, shrinkage H-score, GBC, k-NN); fine-tuning only with --fine-tune."""
    from transferscope.ranking import SCORES
    from transferscope.studies.ranking import RankingSpec, run
    from transferscope.studies.spec import build_spec

    specs = parse_candidates(candidate)
    acc = {}
    for item in accuracy:
        name, _, value = item.partition("=")
        try:
            acc[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--accuracy {item!r}: write NAME=ACC, e.g. lite0=0.93") from None
    given = {"target": target, "split": split or "", "val_split": val_split,
             "candidates": [{"name": n, "model": m, "init": i} for n, (m, i) in specs.items()],
             "image_size": image_size, "batch_size": batch_size, "device": device,
             "executor": executor, "accuracy": acc, "source": source,
             "fine_tune": None if fine_tune is None else {"recipe": fine_tune, "epochs": epochs}}
    spec = build_spec(RankingSpec, given, "transferscope rank")
    result = run(spec, out, data_root)["ranking"]
    table = result.tables["scores"].set_index("candidate")
    shown = table[[c for c in (*SCORES, "fine-tuned accuracy", "width", "forward_s",
                               "scores_s") if c in table]]
    n = int(table["n"].max()) if table["n"].notna().any() else 0
    typer.echo(f"{spec.target}: {n} training images; higher is better, sorted by logme")
    typer.echo(shown.to_string(float_format=_fmt, na_rep="-"))
    f = result.summary.get("factors")
    if f:
        typer.echo(f"target factors (paper 002, the same for every candidate): domain gap "
                   f"{f['domain_gap']:.3g}, domain width {f['domain_width']:.3g}, N {f['N']} "
                   f"(against {f['source']}, {f['images']} + {f['source images']} images)")
    for name, row in table.iterrows():
        if isinstance(row["skipped"], str) and row["skipped"]:
            typer.echo(f"  {name}: {row['skipped']}")
    check = result.tables.get("check")
    if check is not None:
        over = ("candidates and validation images" if set(check.get("resampled", [])) ==
                {"candidates and validation images"} else "candidates only: each accuracy's "
                "own noise is not in it")
        typer.echo(f"score vs fine-tuned accuracy (95% bootstrap interval over {over}):")
        for _, r in check.iterrows():
            typer.echo(f"  {r['score']:10s} tau_w {_fmt(r['tau_w'])} [{_fmt(r['tau_lo'])}, "
                       f"{_fmt(r['tau_hi'])}]  r {_fmt(r['r'])} [{_fmt(r['r_lo'])}, "
                       f"{_fmt(r['r_hi'])}]  n={r['n']}  {r['note']}")
    typer.echo(f"wrote {out / 'results' / 'ranking__scores.csv'} and {out / 'report.html'}")

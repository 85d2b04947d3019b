"""``transferscope rank``: score candidate source models for a target before fine-tuning
(:func:`transferscope.ranking.rank_candidates`), write ``OUT/ranking.csv`` and print the table;
with ``--accuracy`` (fine-tuned accuracies), also how well each score ranks them
(``OUT/ranking_check.csv``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from transferscope.cli._app import DataRoot, app, load_any_model
from transferscope.errors import ConfigError

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
         out: Path = typer.Option(..., help="folder to write ranking.csv to"),
         split: Optional[str] = typer.Option("train", help="the target's training split "
                                             "(sub-folder or CSV split); '' for all of it"),
         accuracy: List[str] = typer.Option([], help="NAME=ACC fine-tuned accuracy of a "
                                            "candidate (repeatable): then each score's "
                                            "weighted Kendall tau and Pearson r against it"),
         image_size: Optional[int] = typer.Option(None, help="input side (default: each "
                                                  "model's own)"),
         batch_size: Optional[int] = typer.Option(None),
         device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
         data_root: Optional[Path] = DataRoot):
    """Rank candidate source models for a target from one forward pass each (LogME, LEEP,
    NCE, H-score, shrinkage H-score, GBC, k-NN); no fine-tuning."""
    from transferscope.data import image_folder
    from transferscope.engine import resolve_device
    from transferscope.ranking import SCORES, check_ranking, rank_candidates

    specs = parse_candidates(candidate)
    acc = {}
    for item in accuracy:
        name, _, value = item.partition("=")
        try:
            acc[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--accuracy {item!r}: write NAME=ACC, e.g. lite0=0.93") from None
        if name.strip() not in specs:
            raise ConfigError(f"--accuracy {name.strip()!r} names no --candidate "
                              f"({', '.join(specs)})")
    resolve_device(device)  # a missing GPU fails before any data is scanned
    data = image_folder(target, split or None, data_root=data_root)
    builders = {name: (lambda m=m, i=i: load_any_model(m, i, None))
                for name, (m, i) in specs.items()}

    def bad(name, why):
        typer.echo(f"{name}: skipped, {why}", err=True)

    table = rank_candidates(data, builders, image_size=image_size, batch_size=batch_size,
                            device=device, on_error=bad)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ranking.csv")
    shown = table[[*SCORES, "width", "forward_s", "scores_s"]]
    typer.echo(f"{data.root} ({len(data)} images, {data.num_classes} classes); higher is "
               "better, sorted by logme")
    typer.echo(shown.to_string(float_format=_fmt, na_rep="-"))
    for name, row in table.iterrows():
        if row["skipped"]:
            typer.echo(f"  {name}: {row['skipped']}")
    if acc:
        check = check_ranking(table, acc)
        check.drop(columns=["tau_interval", "r_interval"]).to_csv(out / "ranking_check.csv",
                                                                  index=False)
        typer.echo("score vs fine-tuned accuracy (95% bootstrap interval over candidates):")
        for _, r in check.iterrows():
            typer.echo(f"  {r['score']:10s} tau_w {_fmt(r['tau_w'])} [{_fmt(r['tau_lo'])}, "
                       f"{_fmt(r['tau_hi'])}]  r {_fmt(r['r'])} [{_fmt(r['r_lo'])}, "
                       f"{_fmt(r['r_hi'])}]  n={r['n']}  {r['note']}")
    typer.echo(f"wrote {out / 'ranking.csv'}")

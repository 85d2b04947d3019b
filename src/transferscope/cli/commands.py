"""Core commands of the ``transferscope`` CLI: train, evaluate, audits, guard, listings, data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from transferscope import __version__
from transferscope.cli._app import (DATA_HELP, SPLIT_DATA_HELP, DataRoot, Executor, LogTo, app,
                                    data_app, load_any_model, with_executor)
from transferscope.errors import ConfigError, TransferscopeError

__all__ = ["analyses_cmd", "audit", "data_check", "data_fetch", "demo", "evaluate", "models",
           "recipes", "train", "version"]


@app.command()
def train(
    arch: str = typer.Option(..., help="architecture, see `transferscope models`"),
    data: str = typer.Option(..., help="training data set " + SPLIT_DATA_HELP),
    out: Path = typer.Option(..., help="run directory to write"),
    init: str = typer.Option("imagenet", help="imagenet (= pretrained) | random | PATH "
                             "(.safetensors/.pt)"),
    recipe: str = typer.Option("paper000-finetune", help="training recipe, see `transferscope recipes`"),
    seed: int = typer.Option(0),
    epochs: Optional[int] = typer.Option(None, help="override the recipe's epochs"),
    image_size: Optional[int] = typer.Option(None, help="override the recipe's image size"),
    batch_size: Optional[int] = typer.Option(None, help="override the recipe's batch size"),
    lr: Optional[float] = typer.Option(None, help="override the recipe's learning rate"),
    resume: bool = typer.Option(False, help="continue an interrupted run in --out"),
    num_workers: int = typer.Option(0, help="data-loading worker processes"),
    keep_checkpoints: Optional[str] = typer.Option(None, help="epoch checkpoints to keep: "
                                                   "'all' or the last N (default: the last)"),
    keep_epochs: str = typer.Option("", help="also keep these epochs' checkpoints, e.g. 2,4 "
                                    "(for checkpoint-transfer)"),
    precise_bn: Optional[bool] = typer.Option(None, help="re-estimate BatchNorm statistics "
                                              "after each epoch (default: with --init random)"),
    device: str = typer.Option("auto", help="auto (CUDA when present) | cpu | cuda | cuda:N | mps"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (bfloat16 autocast: CPUs with "
                                  "AVX512-BF16/AMX, GPUs) | fp16 (float16 autocast with loss "
                                  "scaling, CUDA)"),
    data_root: Optional[Path] = DataRoot,
    log_to: Optional[str] = LogTo,
    monitor: bool = typer.Option(False, help="audit while it trains: after every epoch, "
                                 "retained source classes, distance and CKA to the start and "
                                 "accuracy on a fixed probe set, into <out>/monitor.jsonl "
                                 "(transferscope.callbacks.AuditMonitor; `audit` of the run "
                                 "shows the curves)"),
):
    """Fine-tune or train from scratch; writes weights, checkpoints and metrics to --out."""
    from transferscope.engine import TrainConfig, get_recipe
    from transferscope.engine import train as run_train

    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--precision must be fp32, bf16 or fp16, got {precision!r}")
    from transferscope.models.registry import check_model_name

    check_model_name(arch)  # a typo fails before the data is scanned
    cfg = TrainConfig(arch=arch, init=init, data=data, seed=seed, precise_bn=precise_bn,
                      precision=precision,
                      recipe=get_recipe(recipe, epochs=epochs, image_size=image_size,
                                        batch_size=batch_size, lr=lr))
    from transferscope.trackers import open_tracker

    tracker = open_tracker(log_to, out, f"train {arch} on {data}")
    try:
        if tracker:
            tracker.log_params(json.loads(cfg.model_dump_json()))
        result = run_train(cfg, out, resume=resume, data_root=data_root,
                           num_workers=num_workers, keep_checkpoints=keep_checkpoints,
                           keep_epochs=[int(e) for e in keep_epochs.split(",") if e.strip()],
                           on_epoch=tracker.epoch_logger(arch) if tracker else None,
                           device=device, monitor=_monitor_for(cfg, out, data_root) if monitor
                           else None)
    finally:
        if tracker:
            tracker.close()
    last = result.metrics[-1]
    typer.echo(f"{out}: {len(result.metrics)} epochs, val_acc {last['val_acc']:.4f}, "
               f"val_loss {last['val_loss']:.4f}")



def _monitor_for(cfg, out: Path, data_root):
    """The AuditMonitor of ``train --monitor``: the source is the architecture at the run's
    init with its own head (ImageNet's for ``imagenet``), the probe the target's val split."""
    from transferscope.callbacks import AuditMonitor
    from transferscope.data import image_folder, source_images
    from transferscope.models import create_model

    source = create_model(cfg.arch, init=cfg.init, image_size=cfg.recipe.image_size)
    try:
        src_data = source_images("imagenet-samples", data_root=data_root)
    except TransferscopeError:
        src_data = None  # no labelled source images: every metric but retained knowledge
    return AuditMonitor(source, image_folder(cfg.data, cfg.val_split, data_root=data_root,
                                             empty_classes="skip"),
                        source_data=src_data, out=out, image_size=cfg.recipe.image_size)


@app.command()
def evaluate(
    model: str = typer.Option(..., help="architecture name, run directory or .safetensors file"),
    data: str = typer.Option(..., help=DATA_HELP),
    split: Optional[str] = typer.Option(None, help="split: a sub-folder, or the CSV rows whose "
                                        "split column has this value, e.g. val"),
    source: bool = typer.Option(False, help="labels are ImageNet classes (wnid file/folder names)"),
    init: str = typer.Option("imagenet", help="weights when --model is an architecture name"),
    image_size: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None, help="default: ~16 images of 128 px on CPU"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result here"),
    device: str = typer.Option("auto", help="auto (CUDA when present) | cpu | cuda | cuda:N | mps"),
    data_root: Optional[Path] = DataRoot,
):
    """Top-1/top-5 accuracy of a model on a data set (cached)."""
    from transferscope._io import atomic_write_json
    from transferscope.data import image_folder, source_images
    from transferscope.engine import predict

    from transferscope.models import check_model_name

    from transferscope.engine import resolve_device

    resolve_device(device)  # a missing GPU fails before any data is scanned
    if not Path(model).exists():
        check_model_name(model)  # unknown names fail before any data is scanned
    ds = (source_images if source else image_folder)(data, split, data_root=data_root)
    net = load_any_model(model, init, None if source else ds.num_classes)
    if net.num_classes != ds.num_classes:
        raise TransferscopeError(
            f"{model} has {net.num_classes} outputs but {ds.root} has {ds.num_classes} classes; "
            "use --source for ImageNet-labelled images or a model trained on this data")
    pred = predict(net, ds, image_size=image_size, batch_size=batch_size, device=device)
    result = {"model": model, "data": str(ds.root), "n": len(ds), "top1": pred.accuracy(1),
              "top5": pred.accuracy(min(5, ds.num_classes)), "cached": pred.from_cache,
              "skipped": [s.__dict__ for s in ds.skipped]}
    typer.echo(f"{model} on {ds.root}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} "
               f"({len(ds)} images{', cached' if pred.from_cache else ''}"
               f"{f', {len(ds.skipped)} skipped' if ds.skipped else ''})")
    if json_out:
        atomic_write_json(json_out, result)


@app.command()
def audit(study: Path = typer.Argument(..., help="study TOML file"),
          out: Path = typer.Option(..., help="output folder (runs/, results/, figures/, "
                                   "report.html)"),
          data_root: Optional[Path] = DataRoot, log_to: Optional[str] = LogTo,
          executor: Optional[str] = Executor):
    """Run a study file: train what is missing, run every analysis, write the report.

    Any study kind: kind = "transferability", "remedies", ... at the top of the file
    (default: a memory and what-is-transferred audit; docs/study-file.md lists every key).
    """
    from transferscope.studies.kinds import run_kind
    from transferscope.studies.run import StudySpec, load_any, run_study

    spec = with_executor(load_any(study), executor)
    if not isinstance(spec, StudySpec):
        output = run_kind(spec, out, data_root)
        typer.echo(f"report: {output.report or out / 'report.html'}")
        return
    _, report = run_study(spec, out, spec_text=study.read_text(), data_root=data_root,
                          log_to=log_to)
    typer.echo(f"report: {report}")


@app.command()
def demo(out: Path = typer.Option(Path("transferscope-demo"), help="output folder"),
         quick: bool = typer.Option(False, help="small images, few epochs (smoke test, "
                                    "a few minutes)"),
         print_spec: bool = typer.Option(False, help="print the demo study TOML and exit"),
         data_root: Optional[Path] = DataRoot, log_to: Optional[str] = LogTo,
         executor: Optional[str] = Executor):
    """The demo audit: trains 7 small models, runs every analysis, writes one report.

    ImageNet efficientnet_lite0 fine-tuned on hymenoptera (what it remembers) and on chest
    X-rays (what is transferred); the data sets it needs are downloaded on the first run.
    """
    from transferscope.studies.demo import DEMO_TOML, DEMO_TRANSFER_TOML, run_demo

    if print_spec:
        typer.echo(DEMO_TOML + "\n# ---- part 2 (into OUT/transfer) ----\n" + DEMO_TRANSFER_TOML)
        return
    report = run_demo(out, quick=quick, data_root=data_root, log_to=log_to, executor=executor)
    typer.echo(f"report: {report}")


@app.command()
def models():
    """List the registered architectures and the other sources of models."""
    from transferscope.models import SOURCES, get_spec, list_models

    typer.echo("registered (name as is):")
    for name in list_models():
        spec = get_spec(name)
        weights = "imagenet" if spec.imagenet_weights else "random only"
        typer.echo(f"  {name:22s} {spec.default_size:4d}px  {weights:12s} {spec.description}")
    typer.echo("other sources (--arch / arch = ...; --init imagenet|random|FILE):")
    for text in SOURCES.values():
        typer.echo(f"  {text}")
    typer.echo("  a saved model: FILE.safetensors (save_model/wrap_module; rebuilt by name)")


@app.command()
def recipes():
    """List the training recipes."""
    from transferscope.engine import RECIPES

    for r in RECIPES.values():
        typer.echo(f"{r.name:18s} {r.optimizer} lr={r.lr} {r.schedule} epochs={r.epochs} "
                   f"batch={r.batch_size} size={r.image_size}  [{r.source}]")


@app.command("analyses")
def analyses_cmd(section: Optional[str] = typer.Option(None, help="only this report section")):
    """List the registered analyses: name, report section, paper, title."""
    from transferscope.analyses import get_analysis, list_analyses

    for name in list_analyses(section):
        a = get_analysis(name)
        typer.echo(f"{name:24s} {a.section:17s} {a.paper:42s} {a.title}"
                   + (f"  [made by {a.made_by}]" if a.made_by else ""))


@data_app.command("fetch")
def data_fetch(name: str, data_root: Optional[Path] = DataRoot,
               url: Optional[str] = typer.Option(None, help="download from this mirror "
                                                 "(same archive as upstream)"),
               sha256: Optional[str] = typer.Option(None, help="expected archive sha256"),
               timeout: float = typer.Option(20.0, help="network timeout in seconds")):
    """Download a known data set into the data root (resumable, verified).

    Known sets: hymenoptera, imagenet-samples, imagenette, chest-xray; each is checked against
    the package's manifest (and --sha256).
    """
    from transferscope.data.fetch import fetch

    typer.echo(str(fetch(name, data_root, timeout=timeout, url=url, sha256=sha256)))


@data_app.command("check")
def data_check(name: str, split: Optional[str] = typer.Option(None),
               source: bool = typer.Option(False, help="ImageNet-labelled source images"),
               data_root: Optional[Path] = DataRoot):
    """Scan a data set: classes, counts, manifest digest and skipped files."""
    from transferscope.data import image_folder, source_images

    ds = (source_images if source else image_folder)(name, split, data_root=data_root)
    counts = ds.class_counts()
    typer.echo(f"{ds.root}: {len(ds)} images, {sum(c > 0 for c in counts)} classes, "
               f"digest {ds.digest[:16]}")
    for s in ds.skipped:
        typer.echo(f"  skipped {s.path}: {s.reason}")


@app.command()
def version():
    """Print the transferscope version."""
    typer.echo(__version__)

"""Core commands of the ``transferscope`` CLI: train, evaluate, audits, guard, listings, data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from transferscope import __version__
from transferscope.cli._app import DataRoot, Executor, LogTo, app, data_app, with_executor
from transferscope.errors import ConfigError, TransferscopeError


@app.command()
def train(
    arch: str = typer.Option(..., help="architecture, see `transferscope models`"),
    data: str = typer.Option(..., help="ImageFolder data set: a name under the data root or a path"),
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
):
    """Fine-tune or train from scratch; writes weights, checkpoints and metrics to --out."""
    from transferscope.engine import TrainConfig, get_recipe
    from transferscope.engine import train as run_train

    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--precision must be fp32, bf16 or fp16, got {precision!r}")
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
                           device=device)
    finally:
        if tracker:
            tracker.close()
    last = result.metrics[-1]
    typer.echo(f"{out}: {len(result.metrics)} epochs, val_acc {last['val_acc']:.4f}, "
               f"val_loss {last['val_loss']:.4f}")


def _load_any(model: str, init: str, num_classes: int | None):
    from transferscope.engine import load_run
    from transferscope.models import create_model, load_model

    path = Path(model)
    if path.is_dir():
        return load_run(path)
    if not path.exists() and (model.endswith((".safetensors", ".pt", ".pth")) or (
            "/" in model and ":" not in model.split("/")[0])):
        raise TransferscopeError(f"{model}: no such run directory or model file; give a "
                                 "finished run directory (train writes one) or a .safetensors "
                                 "file, or a registered architecture (`transferscope models`)")
    if path.suffix == ".safetensors" and path.is_file():
        return load_model(path)
    if path.is_file():
        raise TransferscopeError(f"{model}: give a .safetensors model saved by transferscope or a "
                                 "run directory; for a plain checkpoint name its architecture "
                                 f"and pass the file as weights: --model ARCH --init {model}")
    return create_model(model, num_classes, init=init)


@app.command()
def evaluate(
    model: str = typer.Option(..., help="architecture name, run directory or .safetensors file"),
    data: str = typer.Option(..., help="data set name or path"),
    split: Optional[str] = typer.Option(None, help="sub-folder, e.g. val"),
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
    net = _load_any(model, init, None if source else ds.num_classes)
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


@app.command("audit-memory")
def audit_memory(
    model: list[str] = typer.Option(..., help="NAME=RUN_DIR|FILE of a target model; repeat. "
                                    "The first with the source architecture is M^t"),
    out: Path = typer.Option(..., help="folder for results/ and figures/"),
    source: str = typer.Option("efficientnet_lite0", help="source model: architecture "
                               "(ImageNet weights) or .safetensors file"),
    extra_source: list[str] = typer.Option([], help="source architecture for target models "
                                           "of another architecture (ImageNet weights); repeat"),
    init: str = typer.Option("imagenet", help="weights of --source/--extra-source given by "
                             "name: imagenet | random | PATH"),
    target: str = typer.Option("hymenoptera", help="target data set"),
    target_split: str = typer.Option("val"),
    source_images: list[str] = typer.Option(["imagenet-samples", "imagenette/val"],
                                            help="ImageNet-labelled image sets; repeat"),
    views: int = typer.Option(3, help="deterministic augmented views per image, for source "
                              "sets with at most 2 images per class (e.g. imagenet-samples)"),
    image_size: Optional[int] = typer.Option(None, help="image size of the audit (default: "
                                             "the size the first model was trained at, from "
                                             "its run's config.json; else 224)"),
    analyses: Optional[str] = typer.Option(None, help="comma-separated subset"),
    composite_style: str = typer.Option("paper001", help="paper001 (40%/side) | paper000 (10% area)"),
    overlays_per_class: int = typer.Option(10),
    repeats: int = typer.Option(2),
    seed: int = typer.Option(0),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (bfloat16 autocast: faster on "
                                  "CPUs with AVX512-BF16/AMX and on GPUs; logits ~1e-2 apart)"),
    device: str = typer.Option("auto", help="auto (CUDA when present) | cpu | cuda | cuda:N | mps"),
    data_root: Optional[Path] = DataRoot,
):
    """Source-domain memory and interference audit (papers 000 and 001)."""
    from transferscope.analyses import AuditContext
    from transferscope.studies.memory import run_memory_audit
    from transferscope.data import image_folder
    from transferscope.data.views import load_source_set
    from transferscope.engine import resolve_device

    resolve_device(device)  # a missing GPU fails before any model is loaded
    targets = {}
    for spec in model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise TransferscopeError(f"--model {spec!r}: write NAME=RUN_DIR, e.g. "
                                     "--model fine-tuned=runs/ft")
        targets[name] = _load_any(path, "imagenet", None)
    image_size = audit_size(image_size, {n: p for n, _, p in (m.partition("=") for m in model)})
    src = _load_any(source, init, None)
    sets = {}
    for spec in source_images:
        sets[spec] = load_source_set(spec, views, seed, data_root=data_root)
    ctx = AuditContext(src, targets, image_folder(target, target_split, data_root=data_root,
                                                  empty_classes="skip"),
                       sets, image_size=image_size, precision=precision, device=device,
                       extra_sources={a: _load_any(a, init, None) for a in extra_source})
    results = run_memory_audit(
        ctx, out, analyses.split(",") if analyses else None,
        composite_params={"style": composite_style, "overlays_per_class": overlays_per_class,
                          "repeats": repeats, "seed": seed})
    from transferscope.report import write_report

    write_study_file(out, source=source, init=init, target=target, target_split=target_split,
                     models={n: p for n, _, p in (m.partition("=") for m in model)},
                     source_images=source_images, views=views, image_size=image_size,
                     analyses=analyses, precision=precision, device=device,
                     composites={"style": composite_style,
                                 "overlays_per_class": overlays_per_class,
                                 "repeats": repeats, "seed": seed})
    report = write_report(out, results, title=f"source-domain memory audit: {target}",
                          spec_text=(Path(out) / "study.toml").read_text())
    stats = json.loads((Path(out) / "run_stats.json").read_text())
    typer.echo(f"{out}: {len(results)} analyses written in {sum(stats['seconds'].values()):.1f}"
               f" s; cache {stats['cache']}; report {report}")


def trained_size(path: str | Path) -> int | None:
    """The image size a training run directory was trained at (its ``config.json``), or None
    for files and runs without one."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        size = json.loads(cfg.read_text())["config"]["recipe"]["image_size"]
    except (KeyError, TypeError, ValueError):
        return None
    return int(size) if size else None


def audit_size(given: int | None, models: dict[str, str]) -> int:
    """The audit's image size: ``given``, else the size the first model was trained at (a
    warning names models trained at other sizes), else 224."""
    def warn(msg: str) -> None:
        typer.echo(f"warning: {msg}", err=True)

    sizes = {n: trained_size(p) for n, p in models.items()}
    known = {n: s for n, s in sizes.items() if s}
    if len(set(known.values())) > 1:
        warn("models were trained at different image sizes ("
             + ", ".join(f"{n} {s} px" for n, s in known.items()) + "); the audit runs at "
             f"{given or next(iter(known.values()))} px (set --image-size to choose)")
    if given:
        off = {n: s for n, s in known.items() if s != given}
        if off:
            warn(f"auditing at {given} px; trained at " + ", ".join(
                f"{n} {s} px" for n, s in off.items()))
        return given
    return next(iter(known.values()), 224)


def write_study_file(out: Path, *, source: str, init: str, target: str, target_split: str,
                     models: dict[str, str], source_images: list[str], views: int,
                     image_size: int, analyses: str | None, precision: str, device: str,
                     composites: dict) -> Path:
    """``OUT/study.toml`` for what ``audit-memory`` did, so ``guard``, ``Report.from_dir`` and
    ``audit OUT/study.toml`` (a rerun) accept its output folder like a study's. Models (and a
    source given as a file or run) are referred to by absolute path."""
    q = json.dumps  # a JSON string is a valid TOML basic string

    def absolute(p: str) -> str:
        return str(Path(p).resolve()) if Path(p).exists() else p

    src = Path(source)
    if src.exists():  # a file or a run directory: its architecture, these weights
        from transferscope.models import load_model

        arch = load_model(src).arch
        weights = src / "model.safetensors" if src.is_dir() else src
        src_lines = [f"arch = {q(arch)}", f"init = {q(str(weights.resolve()))}"]
    else:
        src_lines = [f"arch = {q(source)}", f"init = {q(absolute(init))}"]
    memory = q(analyses.split(",")) if analyses else '"all"'
    lines = ["# written by `transferscope audit-memory`: rerun with `transferscope audit "
             "study.toml --out DIR`", f"name = {q('source-domain memory audit: ' + target)}",
             f"image_size = {image_size}", f"precision = {q(precision)}", f"device = {q(device)}",
             "", "[source]", *src_lines, "", "[target]", f"data = {q(absolute(target))}",
             f"val_split = {q(target_split)}", "", "[source_images]",
             f"sets = {q([absolute(s) for s in source_images])}", f"views = {views}", "",
             "[analyses]", f"memory = {memory}", 'transfer = "none"',
             'transferability = "none"', "", "[analyses.composites]",
             *(f"{k} = {q(v)}" for k, v in composites.items())]
    for name, path in models.items():
        lines += ["", "[[models]]", f"name = {q(name)}", f"path = {q(absolute(path))}"]
    path = Path(out) / "study.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    from transferscope.studies.spec import parse_study

    parse_study(path.read_text(), str(path))  # what guard will read must parse
    return path


@app.command()
def audit(study: Path = typer.Argument(..., help="study TOML file"),
          out: Path = typer.Option(..., help="output folder (runs/, results/, figures/, "
                                   "report.html)"),
          data_root: Optional[Path] = DataRoot, log_to: Optional[str] = LogTo,
          executor: Optional[str] = Executor):
    """Run a study file: train what is missing, run every analysis, write the report. Any
    study kind (``kind = "transferability"``, ``"remedies"``, ... at the top of the file)."""
    from transferscope.studies.run import StudySpec, load_any, run_study, study_kinds

    spec = with_executor(load_any(study), executor)
    if not isinstance(spec, StudySpec):
        kind = next(k for k, (cls, _) in study_kinds().items() if type(spec) is cls)
        study_kinds()[kind][1](spec, out, data_root)
        typer.echo(f"report: {out / 'report.html'}")
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
    """The demo: ImageNet efficientnet_lite0 fine-tuned on hymenoptera (what it remembers) and
    on chest X-rays (what is transferred); one report."""
    from transferscope.studies.demo import DEMO_TOML, DEMO_TRANSFER_TOML, run_demo

    if print_spec:
        typer.echo(DEMO_TOML + "\n# ---- part 2 (into OUT/transfer) ----\n" + DEMO_TRANSFER_TOML)
        return
    report = run_demo(out, quick=quick, data_root=data_root, log_to=log_to, executor=executor)
    typer.echo(f"report: {report}")


@app.command()
def guard(images: list[Path] = typer.Argument(..., help="image files or folders to check"),
          study: Path = typer.Option(..., help="output folder of a finished study / demo"),
          model: Optional[str] = typer.Option(None, help="which fine-tuned model (default: "
                                              "the first with the source architecture)"),
          json_out: bool = typer.Option(False, "--json", help="print JSON instead of text"),
          data_root: Optional[Path] = DataRoot):
    """Per image: the fine-tuned model's prediction and whether it activates a lingering
    source feature (paper 001, eq. 5)."""
    import torch

    from transferscope.analyses.interference_detector import build
    from transferscope.data import eval_transform, load_rgb
    from transferscope.studies.run import build_context, load_study

    spec, _ = load_study(study / "study.toml")
    ctx = build_context(spec, study, data_root, train_missing=False)
    names = list(ctx.transferred())
    if not names:
        raise TransferscopeError("the study has no model fine-tuned from the source model")
    name = model or names[0]
    if name not in ctx.targets:
        raise TransferscopeError(f"--model {name!r} is not in the study ({', '.join(ctx.targets)})")
    det = build(ctx, name)
    net = ctx.targets[name].eval()
    tf = eval_transform(net.norm, net.input_size(ctx.image_size))
    rows = []
    for path in _image_paths(images):
        try:
            x = tf(load_rgb(path))[None]
        except Exception as exc:
            rows.append({"image": str(path), "error": f"unreadable: {exc}"})
            continue
        with torch.inference_mode():
            probs = net(x).softmax(1)[0]
            st_logits = det.m_st.eval()(x)
        pred = int(probs.argmax())
        score = float(det.score_logits(st_logits)[0])
        top = int(st_logits[0, det.classes].argmax()) if len(det.classes) else None
        rows.append({"image": str(path), "prediction": ctx.target_classes[pred],
                     "confidence": round(float(probs[pred]), 4), "interference": score > det.p_lo,
                     "score": round(score, 4),
                     "lingering_class": ctx.source_data[next(iter(ctx.source_data))].classes[
                         int(det.classes[top])] if top is not None else None})
    if json_out:
        typer.echo(json.dumps({"model": name, "p_lo": det.p_lo, "images": rows}, indent=2))
        return
    typer.echo(f"model {name}; detector threshold p_lo = {det.p_lo:.3f} on the mean "
               f"probability of the lingering classes L ({len(det.classes)} classes)")
    for r in rows:
        typer.echo(guard_line(r, det.p_lo))


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _image_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the image files inside them (sorted, recursive)."""
    out = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES
                           and f.is_file())
            if not found:
                raise TransferscopeError(f"{p} is a folder without image files "
                                         f"({', '.join(sorted(_IMAGE_SUFFIXES))})")
            out += found
        else:
            out.append(p)
    return out


def guard_line(r: dict, p_lo: float) -> str:
    """One line of ``guard``'s text output: prediction, detector score against its threshold,
    the verdict and the lingering class that drove it.

    >>> guard_line({"image": "a.jpg", "prediction": "bees", "confidence": 0.65, "score": 0.41,
    ...             "interference": True, "lingering_class": "n01817953"}, 0.3)
    'a.jpg: bees (0.65); score 0.410 > threshold 0.300: FLAGGED, lingering class n01817953 (african grey parrot)'
    """
    from transferscope.report_html import with_class_names

    if "error" in r:
        return f"{r['image']}: {r['error']}"
    head = f"{r['image']}: {r['prediction']} ({r['confidence']:.2f}); score {r['score']:.3f}"
    if r["interference"]:
        return with_class_names(f"{head} > threshold {p_lo:.3f}: FLAGGED, lingering class "
                                f"{r['lingering_class']}")
    return f"{head} <= threshold {p_lo:.3f}: ok"


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
    """Download a known data set (hymenoptera, imagenet-samples, imagenette) into the data
    root: resumable, verified against the package's manifest (and --sha256)."""
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

"""The audit commands a practitioner runs on their own models: ``audit-memory`` (which writes
an output folder that ``guard``, ``Report.from_dir`` and a rerun accept) and ``guard``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from transferscope.cli._app import DATA_HELP, DataRoot, app
from transferscope.errors import TransferscopeError
from transferscope.studies import audit_memory as defaults
from transferscope.studies.audit_memory import (audit_size, trained_size,  # noqa: F401
                                                write_study_file)

__all__ = ["audit_memory", "guard", "guard_line"]


@app.command("audit-memory")
def audit_memory(
    model: list[str] = typer.Option(..., help="NAME=RUN_DIR|FILE of a target model; repeat. "
                                    "The first with the source architecture is M^t"),
    out: Path = typer.Option(..., help="output folder: study.toml, results/ (findings.json), "
                             "figures/, report.html; guard --study takes it"),
    source: str = typer.Option(defaults.SOURCE, help="source model: architecture "
                               "(ImageNet weights) or .safetensors file"),
    extra_source: list[str] = typer.Option([], help="source architecture for target models "
                                           "of another architecture (ImageNet weights); repeat"),
    init: str = typer.Option(defaults.INIT, help="weights of --source/--extra-source given by "
                             "name: imagenet | random | PATH"),
    target: str = typer.Option(defaults.TARGET, help="target " + DATA_HELP),
    target_split: str = typer.Option(defaults.TARGET_SPLIT, help="split of the target data set: a sub-folder, "
                                     "or the CSV rows whose split column has this value"),
    train_split: str = typer.Option(defaults.TRAIN_SPLIT, help="split of the target data "
                                    "whose images count the source votes v(c) (paper 001, "
                                    "eq. 1), as a study does; when absent, --target-split"),
    source_images: list[str] = typer.Option(list(defaults.SOURCE_IMAGES),
                                            help="ImageNet-labelled image sets; repeat"),
    views: int = typer.Option(defaults.VIEWS, help="deterministic augmented views per image, for source "
                              "sets with at most 2 images per class (e.g. imagenet-samples)"),
    image_size: Optional[int] = typer.Option(None, help="image size of the audit (default: "
                                             "the size the first model was trained at, from "
                                             "its run's config.json; else 224)"),
    analyses: Optional[str] = typer.Option(None, help="comma-separated subset"),
    composite_style: str = typer.Option(defaults.COMPOSITES["style"],
                                        help="paper001 (40%/side) | paper000 (10% area)"),
    overlays_per_class: int = typer.Option(defaults.COMPOSITES["overlays_per_class"]),
    repeats: int = typer.Option(defaults.COMPOSITES["repeats"]),
    seed: int = typer.Option(defaults.COMPOSITES["seed"]),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (bfloat16 autocast: faster on "
                                  "CPUs with AVX512-BF16/AMX and on GPUs; logits ~1e-2 apart)"),
    device: str = typer.Option("auto", help="auto (CUDA when present) | cpu | cuda | cuda:N | mps"),
    data_root: Optional[Path] = DataRoot,
):
    """Audit what a fine-tuned model remembers of its source (papers 000 and 001).

    Writes the output folder of a study: study.toml, results/ (one JSON and CSV per analysis,
    findings.json), figures/ and report.html.
    """
    from transferscope.studies.audit_memory import audit_memory as run_audit

    models = {}
    for spec in model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise TransferscopeError(f"--model {spec!r}: write NAME=RUN_DIR, e.g. "
                                     "--model fine-tuned=runs/ft")
        models[name] = path
    results, report = run_audit(
        models, out, source=source, extra_source=extra_source, init=init, target=target,
        target_split=target_split, train_split=train_split, source_images=source_images,
        views=views,
        image_size=image_size, analyses=analyses.split(",") if analyses else None,
        composites={"style": composite_style, "overlays_per_class": overlays_per_class,
                    "repeats": repeats, "seed": seed},
        precision=precision, device=device, data_root=data_root)
    stats = json.loads((Path(out) / "run_stats.json").read_text())
    typer.echo(f"{out}: {len(results)} analyses written in {sum(stats['seconds'].values()):.1f}"
               f" s; cache {stats['cache']}; report {report}")


@app.command()
def guard(images: list[Path] = typer.Argument(..., help="image files or folders to check"),
          study: Path = typer.Option(..., help="output folder of audit-memory, audit or demo"),
          model: Optional[str] = typer.Option(None, help="which fine-tuned model (default: "
                                              "the first with the source architecture)"),
          json_out: bool = typer.Option(False, "--json", help="print JSON instead of text"),
          data_root: Optional[Path] = DataRoot):
    """Check images against the lingering source memories an audit found (paper 001, eq. 5).

    Per image: the fine-tuned model's prediction, the detector's score against its threshold
    and, when flagged, the lingering source class behind it.
    """
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
    from transferscope.report.page import with_class_names

    if "error" in r:
        return f"{r['image']}: {r['error']}"
    head = f"{r['image']}: {r['prediction']} ({r['confidence']:.2f}); score {r['score']:.3f}"
    if r["interference"]:
        return with_class_names(f"{head} > threshold {p_lo:.3f}: FLAGGED, lingering class "
                                f"{r['lingering_class']}")
    return f"{head} <= threshold {p_lo:.3f}: ok"

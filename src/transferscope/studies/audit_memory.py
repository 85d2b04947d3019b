"""Audit your own model's source-domain memory in one call (papers 000 and 001): the core of
``transferscope audit-memory`` and of :func:`transferscope.audit`.

Writes the output folder of a study - ``study.toml``, ``results/`` (``findings.json``),
``figures/``, ``report.html`` - which ``guard``, ``check``, ``Report.from_dir`` and a rerun
(``transferscope audit OUT/study.toml``) accept.

Example (a few minutes on a CPU; needs the shared data):
    >>> from transferscope import audit  # doctest: +SKIP
    >>> report = audit("runs/ft", "labels.csv", out="audit-ft")  # doctest: +SKIP
    >>> print(report.findings()[0])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from transferscope.errors import ConfigError

__all__ = ["audit", "audit_memory", "audit_size", "COMPOSITES", "INIT", "load_any_model", "SOURCE",
           "SOURCE_IMAGES", "TARGET", "TARGET_SPLIT", "TRAIN_SPLIT", "trained_size", "VIEWS",
           "write_study_file"]

#: the defaults of ``audit-memory`` and :func:`audit` (one home for both)
SOURCE = "efficientnet_lite0"
INIT = "imagenet"
TARGET = "hymenoptera"
TARGET_SPLIT = "val"
TRAIN_SPLIT = "train"  # the fine-tuning data the source votes v(c) count, as in a study
SOURCE_IMAGES = ("imagenet-samples", "imagenette/val")
VIEWS = 3
COMPOSITES = {"style": "paper001", "overlays_per_class": 10, "repeats": 2, "seed": 0}


def load_any_model(model: str, init: str, num_classes: int | None):
    """A model from a run directory, a transferscope ``.safetensors`` file or a name."""
    from transferscope.engine import load_run
    from transferscope.errors import TransferscopeError
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


def audit_memory(models: dict[str, str], out: str | os.PathLike, *, source: str = SOURCE,
                 extra_source=(), init: str = INIT, target: str = TARGET,
                 target_split: str = TARGET_SPLIT, train_split: str = TRAIN_SPLIT,
                 source_images=SOURCE_IMAGES,
                 views: int = VIEWS, image_size: int | None = None,
                 analyses: list[str] | None = None, composites: dict | None = None,
                 precision: str = "fp32", device: str = "auto", data_root=None):
    """Audit the target ``models`` (name -> run directory or ``.safetensors`` file) against
    ``source``; returns ``(results, report_path)``."""
    from transferscope.analyses import AuditContext
    from transferscope.data import image_folder
    from transferscope.data.views import load_source_set
    from transferscope.engine import resolve_device
    from transferscope.report import write_report
    from transferscope.studies.memory import run_memory_audit

    out = Path(out)
    if not models:
        raise ConfigError("give at least one target model (name -> run directory or file)")
    composites = {**COMPOSITES, **(composites or {})}
    resolve_device(device)  # a missing GPU fails before any model is loaded
    paths = {n: str(p) for n, p in models.items()}
    targets = {n: load_any_model(p, "imagenet", None) for n, p in paths.items()}
    image_size = audit_size(image_size, paths)
    src = load_any_model(source, init, None)
    sets = {s: load_source_set(s, views, composites["seed"], data_root=data_root)
            for s in source_images}
    ctx = AuditContext(src, targets, image_folder(target, target_split, data_root=data_root,
                                                  empty_classes="skip"),
                       sets, image_size=image_size, precision=precision, device=device,
                       extra_sources={a: load_any_model(a, init, None) for a in extra_source},
                       entries=_entries(targets, paths),
                       target_train_data=_split_or_none(target, train_split, data_root))
    results = run_memory_audit(ctx, out, list(analyses) if analyses else None,
                               composite_params=composites)
    write_study_file(out, source=source, init=init, target=target, target_split=target_split,
                     train_split=train_split, models=paths, source_images=list(source_images), views=views,
                     image_size=image_size, analyses=",".join(analyses) if analyses else None,
                     precision=precision, device=device, composites=composites)
    report = write_report(out, results, title=f"source-domain memory audit: {target}",
                          spec_text=(out / "study.toml").read_text())
    return results, report


def audit(model, target: str = TARGET, *, out: str | os.PathLike = "audit", name: str = "model",
          **options):
    """Audit your own model in one call: what it remembers of its source, where that makes it
    fail, with every finding's interval and verdict; returns the
    :class:`~transferscope.report.Report` of the output folder ``out``.

    Args:
        model: a fine-tuned model - an ``nn.Module`` (a TransferModel, or any classifier
            :func:`~transferscope.models.wrap_module` takes), a run directory, a
            ``.safetensors`` file - or a dict of several (name -> any of those).
        target: its data set (a name under the data root, an ImageFolder folder or a CSV).
        out: the output folder (study.toml, results/, figures/, report.html).
        name: the model's name in the report (when ``model`` is not a dict).
        options: those of :func:`audit_memory` (``source``, ``image_size``, ``analyses``,
            ``source_images``, ``device``, ...), with the same defaults as the CLI.
    """
    out = Path(out)
    given = model if isinstance(model, dict) else {name: model}
    paths = {}
    for key, m in given.items():
        if isinstance(m, (str, os.PathLike)):
            paths[key] = str(m)
            continue
        from torch import nn

        from transferscope.models import TransferModel, save_model, wrap_module

        if not isinstance(m, nn.Module):
            raise ConfigError(f"audit: model {key!r} is a {type(m).__name__}; give an "
                              "nn.Module, a run directory or a .safetensors file")
        tm = m if isinstance(m, TransferModel) else wrap_module(m)
        from transferscope._paths import safe_component

        path = out / "models" / f"{safe_component(key, 'audit: model name')}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(tm, path)
        paths[key] = str(path)
    audit_memory(paths, out, target=target, **options)
    from transferscope.report import Report

    return Report.from_dir(out)


def _split_or_none(target: str, split: str, data_root):
    """The target's ``split`` - the fine-tuning data whose images the source votes v(c) of
    paper 001, eq. 1 count (lingering features, the detector) - or None when the data has no
    such split (then the audited split is counted). A study (and so a rerun of the folder, and
    ``guard``) counts the same split."""
    from transferscope.data import image_folder
    from transferscope.errors import TransferscopeError

    try:
        return image_folder(target, split, data_root=data_root)
    except (TransferscopeError, OSError):
        return None


def _entries(targets: dict, paths: dict[str, str]) -> dict:
    """Each target's run directory when it was given one (its monitor.jsonl, config.json)."""
    from transferscope.analyses.context import ModelEntry

    paths = {n: Path(p) for n, p in paths.items()}
    return {n: ModelEntry(n, "other", m.arch, run_dir=paths[n] if paths[n].is_dir() else None)
            for n, m in targets.items()}


def trained_size(path: str | Path) -> int | None:
    """The image size a model was trained at: a run directory's ``config.json`` (its recipe),
    else the input size a transferscope ``.safetensors`` file records; None otherwise.

    The file's size is the size the model was built for: the training size for models
    ``train`` or :func:`audit` saved, the architecture's default for pretrained ones."""
    path = Path(path)
    cfg = path / "config.json"
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as fh:
                size = (fh.metadata() or {}).get("image_size")
            return int(size) if size else None
        except (OSError, ValueError, TypeError):
            return None
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
        print(f"warning: {msg}", file=sys.stderr)  # always shown, unlike progress output

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
                     train_split: str = TRAIN_SPLIT,
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
             f"val_split = {q(target_split)}", f"train_split = {q(train_split)}", "",
             "[source_images]",
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



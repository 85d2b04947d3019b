"""A study: one TOML file naming the source model, target data, source images, the models to
train or load, and the analyses - validated with messages that name the bad key.

``run_study(spec, out)`` trains what is missing (reusing finished runs under ``out/runs``),
runs the analyses through the shared cache and writes ``out/results``, ``out/figures`` and
``out/report.html``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from transferscope.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEMO_TOML = """\
# The default study: ImageNet EfficientNet-Lite0 fine-tuned on ants vs bees.
name = "demo: efficientnet_lite0 (ImageNet) -> hymenoptera"
image_size = 128

[source]
arch = "efficientnet_lite0"

[target]
data = "hymenoptera"

[source_images]
sets = ["imagenet-samples", "imagenette/val"]
views = 5

[[models]]
name = "fine-tuned"
arch = "efficientnet_lite0"
init = "imagenet"
recipe = "paper002"
epochs = 6
batch_size = 32

[[models]]
name = "scratch-cnn"
arch = "baseline_cnn"
init = "random"
recipe = "paper000-scratch"
epochs = 30
image_size = 128

[[models]]
name = "scratch-lite0"
arch = "efficientnet_lite0"
init = "random"
recipe = "paper002"
epochs = 6
batch_size = 32

[[models]]
name = "scratch-lite0-2"
arch = "efficientnet_lite0"
init = "random"
recipe = "paper002"
epochs = 6
batch_size = 32
seed = 1

[[models]]
name = "fine-tuned-2"
arch = "efficientnet_lite0"
init = "imagenet"
recipe = "paper002"
epochs = 6
batch_size = 32
seed = 1

[analyses]
memory = "all"

[analyses.composites]
style = "paper001"
overlays_per_class = 10
repeats = 2
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    arch: str = "efficientnet_lite0"
    init: str = "imagenet"


class TargetSpec(_Strict):
    data: str
    train_split: str = "train"
    val_split: str = "val"


class SourceImagesSpec(_Strict):
    sets: list[str] = Field(default_factory=lambda: ["imagenet-samples"], min_length=1)
    views: int = Field(2, ge=1, le=32)
    limit: int | None = Field(None, ge=1, description="use every n-th image to keep at most "
                              "this many per set (quick runs)")


class ModelSpec(_Strict):
    name: str
    path: str | None = None
    arch: str | None = None
    init: str = "imagenet"
    recipe: str = "paper002"
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    image_size: int | None = Field(None, ge=8)
    seed: int = 0


class CompositeSpec(_Strict):
    style: Literal["paper000", "paper001"] = "paper001"
    overlays_per_class: int = Field(10, ge=1)
    repeats: int = Field(2, ge=1)
    seed: int = 0


class TransferSpec(_Strict):
    """Options of the papers 003/004 analyses."""

    lambdas: list[float] = Field(default_factory=lambda: [-1.0, -0.5, 0.0, 0.25, 0.5, 0.75,
                                                          1.0, 1.5, 2.0])
    bn_reestimate: bool = False
    criticality_images: int = Field(64, ge=1)
    criticality_modules: int = Field(6, ge=2)


class AnalysesSpec(_Strict):
    memory: Literal["all", "none"] | list[str] = "all"
    transfer: Literal["all", "none"] | list[str] = "all"
    composites: CompositeSpec = Field(default_factory=CompositeSpec)
    transfer_options: TransferSpec = Field(default_factory=TransferSpec)


class StudySpec(_Strict):
    name: str = "transferscope study"
    image_size: int = Field(224, ge=8)
    batch_size: int | None = Field(None, ge=1, description="batch of the analyses' forward "
                                   "passes (default: auto_batch_size for image_size)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="forward passes of the "
                                               "analyses: fp32, or bfloat16 autocast")
    source: SourceSpec = Field(default_factory=SourceSpec)
    target: TargetSpec
    source_images: SourceImagesSpec = Field(default_factory=SourceImagesSpec)
    models: list[ModelSpec] = Field(min_length=1)
    analyses: AnalysesSpec = Field(default_factory=AnalysesSpec)


def parse_study(text: str, source: str = "study") -> StudySpec:
    """Parse and validate TOML text; errors name the file, the key and the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc}); fix the syntax there") from exc
    try:
        spec = StudySpec(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{source}: key '{loc}': {err['msg']}"
                          f"{' (' + str(err['input'])[:60] + ')' if 'input' in err and err['type'] != 'missing' else ''}"
                          f"; see DEMO_TOML in transferscope.study or README for the format"
                          ) from exc
    _check_analysis_names(spec, source)
    names = [m.name for m in spec.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: model names must be unique, got {names}")
    for m in spec.models:
        if m.path is None and m.arch is None:
            raise ConfigError(f"{source}: model '{m.name}' needs 'arch' (to train) or 'path' "
                              "(an existing run directory or .safetensors file)")
    return spec


def _check_analysis_names(spec: StudySpec, source: str) -> None:
    """Unknown analysis names fail here, before any model is trained."""
    from transferscope.audit import MEMORY_ANALYSES
    from transferscope.what_transferred import WHAT_ANALYSES

    for key, chosen, known in (("analyses.memory", spec.analyses.memory, MEMORY_ANALYSES),
                               ("analyses.transfer", spec.analyses.transfer, WHAT_ANALYSES)):
        unknown = [] if isinstance(chosen, str) else [n for n in chosen if n not in known]
        if unknown:
            raise ConfigError(f"{source}: key '{key}': unknown analyses {unknown}; use 'all', "
                              f"'none' or a list of: {', '.join(known)}")


def load_study(path: str | os.PathLike) -> tuple[StudySpec, str]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}; `transferscope demo --print-spec` "
                          "prints an example to start from")
    text = path.read_text()
    return parse_study(text, str(path)), text


def _train_or_load(m: ModelSpec, spec: StudySpec, out: Path, data_root):
    from transferscope.engine import TrainConfig, get_recipe, load_run, train
    from transferscope.models import load_model

    if m.path is not None:
        path = Path(m.path)
        if path.is_dir():
            return load_run(path)
        return load_model(path)
    cfg = TrainConfig(arch=m.arch, init=m.init, data=spec.target.data, seed=m.seed,
                      train_split=spec.target.train_split, val_split=spec.target.val_split,
                      recipe=get_recipe(m.recipe, epochs=m.epochs, batch_size=m.batch_size,
                                        lr=m.lr, image_size=m.image_size or spec.image_size))
    return train(cfg, out / "runs" / m.name, resume=True, data_root=data_root,
                 keep_checkpoints=None).model


def quick(spec: StudySpec) -> StudySpec:
    """A smoke-test variant: small images, few epochs, a subset of the source images."""
    data = spec.model_dump()
    data["image_size"] = 96
    data["source_images"]["limit"] = 150
    data["analyses"]["composites"].update(overlays_per_class=4, repeats=1)
    data["analyses"]["transfer_options"].update(lambdas=[0.0, 0.5, 1.0],
                                                criticality_images=16, criticality_modules=3)
    for m in data["models"]:
        m["epochs"] = 2 if m["arch"] != "baseline_cnn" else 6
        m["image_size"] = 96
    return StudySpec(**data)


def build_context(spec: StudySpec, out: Path, data_root=None, train_missing: bool = True):
    """The :class:`AuditContext` of a study (training missing models when allowed)."""
    from transferscope._progress import log
    from transferscope.analyses import AuditContext
    from transferscope.data import image_folder
    from transferscope.data.views import load_source_set
    from transferscope.engine import load_run
    from transferscope.models import create_model

    target_val = image_folder(spec.target.data, spec.target.val_split, data_root=data_root)
    sets = {}
    for entry in spec.source_images.sets:
        sets[entry] = load_source_set(entry, spec.source_images.views,
                                      limit=spec.source_images.limit, data_root=data_root)
    models = {}
    for m in spec.models:
        if train_missing:
            log(f"[bold]model[/bold] {m.name}")
            models[m.name] = _train_or_load(m, spec, out, data_root)
        else:
            run = Path(m.path) if m.path else out / "runs" / m.name
            if not (run / "model.safetensors").exists() and not run.is_file():
                raise ConfigError(f"model '{m.name}' has no finished run at {run}; run "
                                  f"`transferscope audit` on the study first")
            models[m.name] = load_run(run) if run.is_dir() else _train_or_load(m, spec, out,
                                                                               data_root)
    source = create_model(spec.source.arch, init=spec.source.init)
    extra = {a: create_model(a, init=spec.source.init) for a in
             {m.arch for m in spec.models if m.init == "imagenet" and m.arch} - {source.arch}}
    return AuditContext(source, models, target_val, sets, image_size=spec.image_size,
                        batch_size=spec.batch_size, extra_sources=extra,
                        precision=spec.precision)


def run_study(spec: StudySpec, out: str | os.PathLike, *, spec_text: str | None = None,
              data_root=None):
    """:func:`_run_study` holding ``out``'s writer lock (a second study on ``out`` waits)."""
    from transferscope._lock import writer_lock

    with writer_lock(out, f"study {spec.name} into {out}"):
        return _run_study(spec, out, spec_text=spec_text, data_root=data_root)


def _run_study(spec: StudySpec, out: str | os.PathLike, *, spec_text: str | None = None,
               data_root=None):
    """Train/load the models, run the selected analyses, write results and report.html."""
    from transferscope.audit import MEMORY_ANALYSES, run_memory_audit
    from transferscope.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if spec_text is not None:
        (out / "study.toml").write_text(spec_text)
    ctx = build_context(spec, out, data_root)
    memory = spec.analyses.memory
    selected = [] if memory == "none" else list(MEMORY_ANALYSES) if memory == "all" else memory
    results = run_memory_audit(ctx, out, selected,
                               composite_params=spec.analyses.composites.model_dump())
    transfer = spec.analyses.transfer
    if transfer != "none":
        from transferscope.what_transferred import WHAT_ANALYSES, run_what_transferred

        chosen = WHAT_ANALYSES if transfer == "all" else transfer
        opts = spec.analyses.transfer_options
        run_dirs = {m.name: Path(m.path) if m.path else out / "runs" / m.name
                    for m in spec.models}
        results.update(run_what_transferred(
            ctx, out, {m.name: m.init for m in spec.models if m.path is None}, run_dirs,
            chosen, lambdas=opts.lambdas, bn_reestimate=opts.bn_reestimate,
            criticality_images=opts.criticality_images,
            criticality_modules=opts.criticality_modules))
    report = write_report(out, results, title=spec.name, spec_text=spec_text)
    return results, report


class Study:
    """Notebook handle on a study: ``Study.from_toml(path).run("out")``.

    Example:
        >>> s = Study.from_text(DEMO_TOML)
        >>> [m.name for m in s.spec.models][:2]
        ['fine-tuned', 'scratch-cnn']
    """

    def __init__(self, spec: StudySpec, text: str | None = None):
        self.spec, self.text = spec, text

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Study":
        spec, text = load_study(path)
        return cls(spec, text)

    @classmethod
    def from_text(cls, text: str) -> "Study":
        return cls(parse_study(text), text)

    @classmethod
    def demo(cls, quick_variant: bool = False) -> "Study":
        spec = parse_study(DEMO_TOML, "demo study")
        return cls(quick(spec) if quick_variant else spec, DEMO_TOML)

    def context(self, out: str | os.PathLike, data_root=None):
        """The :class:`~transferscope.analyses.AuditContext` (trains missing models)."""
        return build_context(self.spec, Path(out), data_root)

    def run(self, out: str | os.PathLike, data_root=None):
        """Train, analyse, report; returns ``(results, report_path)``."""
        return run_study(self.spec, out, spec_text=self.text, data_root=data_root)

"""A study: one TOML file naming the source model, target data, source images, the models to
train or load, and the analyses - validated with messages that name the bad key.

:func:`transferscope.studies.run.run_study` trains what is missing (reusing finished runs
under ``out/runs``), runs the analyses through the shared cache and writes ``out/results``,
``out/figures`` and ``out/report.html``.
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
    return study_from_dict(data, source)


def study_from_dict(data: dict, source: str = "study") -> StudySpec:
    """Validate a study's data (parsed TOML); errors name the source, the key and the problem."""
    try:
        spec = StudySpec(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{source}: key '{loc}': {err['msg']}"
                          f"{' (' + str(err['input'])[:60] + ')' if 'input' in err and err['type'] != 'missing' else ''}"
                          f"; see DEMO_TOML in transferscope.studies.spec or README for the format"
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
    from transferscope.analyses import list_analyses

    for key, chosen, section in (("analyses.memory", spec.analyses.memory, "memory"),
                                 ("analyses.transfer", spec.analyses.transfer,
                                  "what_transferred")):
        known = list_analyses(section, runnable=True)
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


def build_spec(cls: type[BaseModel], data: dict, source: str = "settings"):
    """``cls(**data)`` with a validation error as one ConfigError naming the key."""
    try:
        return cls(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{source}: key '{loc}': {err['msg']}; its keys are "
                          f"{', '.join(cls.model_fields)}") from exc


def load_spec_file(path: str | os.PathLike, cls: type[BaseModel]):
    """A typed study spec (``TransferabilitySpec``, ``RemedySpec``, ...) from a TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax there") from exc
    return build_spec(cls, data, str(path))

"""A study: one TOML file naming the source model, target data, source images, the models to
train or load, and the analyses - validated with messages that name the bad key.

:func:`transferscope.studies.run.run_study` trains what is missing (reusing finished runs
under ``out/runs``), runs the analyses through the shared cache and writes ``out/results``,
``out/figures`` and ``out/report.html``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from transferscope._paths import safe_component
from transferscope.errors import ConfigError

__all__ = ["AnalysesSpec", "build_spec", "check_runs", "CompositeSpec", "ExecutorFields",
           "load_spec_file", "load_study", "ModelSpec", "parse_study", "quick", "read_toml",
           "SourceImagesSpec", "SourceSpec", "study_from_dict", "StudySpec", "TargetSpec",
           "toml_key", "toml_value", "TransferSpec", "with_executor"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    """The source model M^s: the pre-trained network whose memory the study audits."""

    arch: str = Field("efficientnet_lite0", description="architecture of the source model "
                      "(`transferscope models` lists them)")
    init: str = Field("imagenet", description="its weights: `imagenet` (the packaged ImageNet "
                      "weights), `random`, or a `.safetensors`/`.pt` file")


class TargetSpec(_Strict):
    """The target data set, an ImageFolder layout `DATA/<split>/<class>/<image>`."""

    data: str = Field(description="target data set: a name under the data root "
                      "(e.g. `hymenoptera`) or a folder path")
    train_split: str = Field("train", description="sub-folder the models are trained on")
    val_split: str = Field("val", description="sub-folder the models are evaluated and "
                           "audited on")


class SourceImagesSpec(_Strict):
    """ImageNet-labelled images for the source-domain analyses (labels: file or folder names
    that are ImageNet wnids or class names)."""

    sets: list[str] = Field(default_factory=lambda: ["imagenet-samples"], min_length=1,
                            description="image sets: names under the data root, `NAME/SPLIT` "
                            "(e.g. `imagenette/val`) or folder paths")
    views: int = Field(2, ge=1, le=32, description="deterministic augmented views per image, "
                       "for sparse sets (at most 2 images per class)")
    limit: int | None = Field(None, ge=1, description="use every n-th image to keep at most "
                              "this many per set (quick runs)")


class ModelSpec(_Strict):
    """One target model, trained on the target data (or loaded with `path`). Same architecture
    as the source: `init = "imagenet"` is a fine-tuned model (P-T), `init = "random"` one trained
    from scratch (RI-T)."""

    name: str = Field(description="unique name; the run is written to `OUT/runs/NAME`")
    path: str | None = Field(None, description="load this finished run directory or "
                             "`.safetensors` file instead of training (then `arch` is optional)")
    arch: str | None = Field(None, description="architecture to train (`transferscope models`); "
                             "required unless `path` is given")
    init: str = Field("imagenet", description="initial weights: `imagenet`, `random` or a "
                      "`.safetensors`/`.pt` file")
    recipe: str = Field("paper002", description="training recipe (`transferscope recipes`)")
    epochs: int | None = Field(None, ge=1, description="override the recipe's epochs")
    batch_size: int | None = Field(None, ge=1, description="override the recipe's batch size")
    lr: float | None = Field(None, gt=0, description="override the recipe's learning rate")
    image_size: int | None = Field(None, ge=8, description="training image size (default: the "
                                   "study's `image_size`)")
    seed: int = Field(0, description="training seed (data order, head and random init)")
    keep_checkpoints: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        None, description="epoch checkpoints kept: 'all' or the last N (default 1)")


class CompositeSpec(_Strict):
    """Composite images (paper 000 Fig. 2, paper 001): target images pasted onto source
    images, used by the composites, occlusion and distraction analyses."""

    style: Literal["paper000", "paper001"] = Field(
        "paper001", description="overlay size: `paper001` 40 % of each side (16 % of the "
        "area), `paper000` about 10 % of the area")
    overlays_per_class: int = Field(10, ge=1, description="target images pasted per target "
                                    "class (the most confidently classified)")
    repeats: int = Field(2, ge=1, description="random placements of each overlay per "
                         "background")
    seed: int = Field(0, description="seed of the placements")


class TransferSpec(_Strict):
    """Options of the papers 003/004 analyses."""

    lambdas: list[float] | None = Field(None, description="performance barriers: points "
                                        "lambda on the line (1 - lambda) theta_0 + lambda "
                                        "theta_1 between two solutions (outside [0, 1]: "
                                        "extrapolation); default: the barriers analysis' own")
    bn_reestimate: bool | None = Field(None, description="re-estimate BatchNorm statistics "
                                       "at every combined or perturbed point, on images that "
                                       "are not evaluated (training images, else held-out "
                                       "validation images); default (unset): whenever the "
                                       "model has BatchNorm")
    criticality_images: int | None = Field(None, ge=1, description="images evaluated by "
                                           "module criticality (training split when there is "
                                           "one) and the basins (validation split); below 256 "
                                           "and 250 their findings say too few images to tell;"
                                           " default: each analysis's own")
    criticality_modules: int | None = Field(None, ge=2, description="layer groups tested for "
                                            "criticality, evenly spaced and always the last; "
                                            "default: the analysis's own")


class AnalysesSpec(_Strict):
    """Which analyses run, and their options."""

    memory: Literal["all", "none"] | list[str] = Field(
        "all", description="source-domain memory analyses (papers 000/001): `all`, `none` or "
        "a list of names; an unknown name fails and lists the known ones")
    transfer: Literal["all", "none"] | list[str] = Field(
        "all", description="what-is-transferred analyses (papers 003/004; need models of the "
        "source architecture with `imagenet` or `random` init): `all`, `none` or a list")
    transferability: Literal["all", "none"] | list[str] = Field(
        "all", description="paper 002 analyses of the study's own runs (layer-wise T_FB / T_SB "
        "of a fine-tuned and a from-scratch run of the source architecture with the same seed, "
        "the target's domain gap and width against the source images, layer-wise gradients and "
        "the first-layer t-test): `all` (those that apply), `none` or a list")
    composites: CompositeSpec = Field(default_factory=CompositeSpec,
                                      description="composite images")
    transfer_options: TransferSpec = Field(default_factory=TransferSpec,
                                           description="options of the transfer analyses")
    options: dict[str, dict] = Field(
        default_factory=dict, description="any analysis's options, one table per analysis: "
        "`[analyses.options.distraction]` then `per_class = 20`; the same options as in "
        "Python and `transferscope analyses` (they override `composites` and "
        "`transfer_options`)")


class ExecutorFields(BaseModel):
    """Where a study's training runs execute (:mod:`transferscope.engine.executor`); shared by
    every study kind that trains."""

    executor: Literal["local", "ray"] = Field(
        "local", description="how the training runs execute: `local` (one after another in "
        "this process) or `ray` (one Ray task per run on the cluster of `RAY_ADDRESS`, else a "
        "local one; `pip install 'transferscope[ray]'`)")
    run_cpus: int | None = Field(None, ge=1, description="CPU threads per training run (Ray's "
                                 "`num_cpus`); default: all of this process's locally, 1 on Ray")
    run_gpus: float = Field(0, ge=0, description="GPUs per training run on Ray (`num_gpus`, "
                            "fractions share a GPU)")


class StudySpec(_Strict, ExecutorFields):
    """A study file: the source model, the target data, the source images, the models to train
    or load, and the analyses. `transferscope audit STUDY.toml --out DIR` runs it."""

    name: str = Field("transferscope study", description="title of the report")
    image_size: int = Field(224, ge=8, description="image size of the analyses, and of "
                            "training unless a model sets its own")
    batch_size: int | None = Field(None, ge=1, description="batch of the analyses' forward "
                                   "passes (default: auto_batch_size for image_size)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="forward passes of the analyses: fp32, or bfloat16 / float16 (GPU) "
        "autocast")
    device: str = Field("auto", description="where training, forward passes and Grad-CAM run: auto "
                        "(CUDA when present), cpu, cuda, cuda:N or mps")
    source: SourceSpec = Field(default_factory=SourceSpec, description="the source model")
    target: TargetSpec = Field(description="the target data set")
    source_images: SourceImagesSpec = Field(default_factory=SourceImagesSpec,
                                            description="ImageNet-labelled source images")
    models: list[ModelSpec] = Field(min_length=1, description="the target models, one "
                                    "`[[models]]` table each (at least one)")
    analyses: AnalysesSpec = Field(default_factory=AnalysesSpec, description="the analyses")
    check: dict | list[dict] = Field(default_factory=dict, description="a [check] table (or "
                                     "[[check]] tables): thresholds on the results that "
                                     "`transferscope check OUT` tests (docs/ci-gate.md)")

    @field_validator("check")
    @classmethod
    def _rules_parse(cls, v):
        from transferscope.studies.check_rules import rules_from_table

        rules_from_table(v, "study")  # one clear line before anything trains
        return v

    log_to: Literal["tensorboard", "mlflow"] | None = Field(None, description="also log to "
                                                            "this tracker (transferscope.trackers)")


def parse_study(text: str, source: str = "study") -> StudySpec:
    """Parse and validate TOML text; errors name the file, the key and the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc}); fix the syntax there") from exc
    return study_from_dict(data, source)


def _resolve_rank(spec: StudySpec) -> None:
    """``rank:PATH`` source / model architectures -> the ranking study's best candidate
    (:mod:`transferscope.studies.rank_source`)."""
    from transferscope.studies.rank_source import PREFIX, resolve

    if spec.source.arch.startswith(PREFIX):
        spec.source.arch, spec.source.init = resolve(spec.source.arch, spec.source.init)
    for m in spec.models:
        if m.arch and m.arch.startswith(PREFIX):
            m.arch = resolve(m.arch, m.init)[0]


def study_from_dict(data: dict, source: str = "study") -> StudySpec:
    """Validate a study's data (parsed TOML); errors name the source, the key and the problem."""
    try:
        spec = StudySpec(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            from transferscope.errors import did_you_mean

            loc += did_you_mean(str(err["loc"][-1]), _all_keys(StudySpec))
        raise ConfigError(f"{source}: key '{loc}': {err['msg']}"
                          f"{' (' + str(err['input'])[:60] + ')' if 'input' in err and err['type'] != 'missing' else ''}"
                          f"; `transferscope demo --print-spec` prints a complete study file (format: docs/study-file.md)"
                          ) from exc
    _resolve_rank(spec)
    _check_analysis_names(spec, source)
    names = [m.name for m in spec.models]
    for name in names:  # each becomes OUT/runs/NAME
        safe_component(name, f"{source}: key 'models.name'")
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: model names must be unique, got {names}")
    for m in spec.models:
        if m.path is None and m.arch is None:
            raise ConfigError(f"{source}: model '{m.name}' needs 'arch' (to train) or 'path' "
                              "(an existing run directory or .safetensors file)")
    _check_model_names(spec, source)
    _check_recipes(spec, source)
    from transferscope.engine.device import resolve_device

    try:
        resolve_device(spec.device)
    except ConfigError as exc:
        raise ConfigError(f"{source}: key 'device': {exc}") from None
    return spec


def _all_keys(model: type[BaseModel]) -> set[str]:
    """Every key a study file may use, at any depth (for "did you mean")."""
    keys = set()
    for name, f in model.model_fields.items():
        keys.add(name)
        for t in (f.annotation, *getattr(f.annotation, "__args__", ())):
            if isinstance(t, type) and issubclass(t, BaseModel):
                keys |= _all_keys(t)
    return keys


def _check_model_names(spec: StudySpec, source: str) -> None:
    """Unknown architectures fail here, before any model is trained."""
    from transferscope.models import check_model_name

    named = [("source.arch", spec.source.arch)] + [
        (f"models '{m.name}' arch", m.arch) for m in spec.models if m.arch is not None]
    for key, arch in named:
        try:
            check_model_name(arch)
        except ConfigError as exc:
            raise ConfigError(f"{source}: key {key}: {exc}") from None


def _check_recipes(spec: StudySpec, source: str) -> None:
    """Unknown recipes (and bad overrides) fail here, before any model is trained."""
    from transferscope.engine import get_recipe

    for m in spec.models:
        if m.path is not None:
            continue
        try:
            get_recipe(m.recipe, epochs=m.epochs, batch_size=m.batch_size, lr=m.lr,
                       image_size=m.image_size or spec.image_size)
        except ConfigError as exc:
            raise ConfigError(f"{source}: key models '{m.name}' recipe: {exc}") from None


def _check_analysis_names(spec: StudySpec, source: str) -> None:
    """Unknown analysis names fail here, before any model is trained."""
    from transferscope.analyses import list_analyses

    from transferscope.analyses._registry import MEMORY_SECTIONS

    for key, chosen, sections in (("analyses.memory", spec.analyses.memory, MEMORY_SECTIONS),
                                  ("analyses.transfer", spec.analyses.transfer,
                                   ("what_transferred",)),
                                  ("analyses.transferability", spec.analyses.transferability,
                                   ("transferability",))):
        known = [n for s in sections for n in list_analyses(s, runnable=True)]
        unknown = [] if isinstance(chosen, str) else [n for n in chosen if n not in known]
        if unknown:
            from transferscope.errors import did_you_mean

            raise ConfigError(f"{source}: key '{key}': unknown analyses {unknown}"
                              f"{did_you_mean(unknown[0], known)}; use 'all', "
                              f"'none' or a list of: {', '.join(known)}")
    from transferscope.analyses._registry import validate_options
    from transferscope.errors import did_you_mean

    runnable = list_analyses(runnable=True)
    for name, given in spec.analyses.options.items():
        if name not in runnable:
            raise ConfigError(f"{source}: key 'analyses.options.{name}': unknown analysis"
                              f"{did_you_mean(name, runnable)}; known: {', '.join(runnable)}")
        try:
            validate_options(name, given)
        except ConfigError as exc:
            raise ConfigError(f"{source}: key 'analyses.options.{name}': {exc}") from None


def load_study(path: str | os.PathLike) -> tuple[StudySpec, str]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}; `transferscope demo --print-spec` "
                          "prints an example to start from")
    text = path.read_text()
    return parse_study(text, str(path)), text


def quick(spec: StudySpec) -> StudySpec:
    """A smoke-test variant: images of at most 96 px, few epochs, a subset of the source
    images, a coarse barrier path and a small criticality grid."""
    data = spec.model_dump()
    size = min(spec.image_size, 96)
    data["image_size"] = size
    data["source_images"]["limit"] = 150
    data["analyses"]["composites"].update(overlays_per_class=4, repeats=1)
    data["analyses"]["transfer_options"].update(lambdas=[-0.5, 0.0, 0.5, 1.0, 1.5],
                                                criticality_images=16, criticality_modules=3)
    for m in data["models"]:
        m["epochs"] = 2 if m["arch"] != "baseline_cnn" else 6
        m["image_size"] = min(m["image_size"] or size, size)
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


def with_executor(spec, executor: str | None):
    """``spec`` (any study kind) with ``executor`` set, validated like the file's key; the
    spec itself when ``executor`` is None (``--executor`` not given)."""
    if executor is None:
        return spec
    return build_spec(type(spec), {**spec.model_dump(), "executor": executor}, "--executor")


def read_toml(path: str | os.PathLike, what: str = "study file") -> dict:
    """A TOML file's data; one line when it is missing or not valid TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax there") from None


def load_spec_file(path: str | os.PathLike, cls: type[BaseModel]):
    """A typed study spec (``TransferabilitySpec``, ``RemedySpec``, ...) from a TOML file."""
    return build_spec(cls, read_toml(path), str(path))


def check_runs(*, arch: str | None = None, recipe: str | None = None, recipe_args=None,
               data: dict[str, str] | None = None, data_root=None) -> None:
    """The checks every study kind that trains makes before its first run: ``arch`` is a
    known model, ``recipe`` a known recipe (with its overrides), and each data entry of
    ``data`` (``{setting: name or path}``) exists - ConfigError / DataError naming the key."""
    if arch is not None:
        from transferscope.models import check_model_name

        try:
            check_model_name(arch)
        except ConfigError as exc:
            raise ConfigError(f"key 'arch': {exc}") from None
    if recipe is not None:
        from transferscope.engine import get_recipe

        try:
            get_recipe(recipe, **(recipe_args or {}))
        except ConfigError as exc:
            raise ConfigError(f"key 'recipe': {exc}") from None
    from transferscope.data.folder import _resolve_file, resolve_folder
    from transferscope.errors import DataError

    for key, entry in (data or {}).items():
        if str(entry).endswith(".csv"):
            if not _resolve_file(entry, data_root).is_file():
                raise DataError(f"key '{key}': data table not found: {entry}")
            continue
        try:
            resolve_folder(entry, None, data_root)
        except DataError as exc:
            raise DataError(f"key '{key}': {exc}") from None


def toml_value(value) -> str:
    """A Python value as TOML (``None`` is written as ``(unset)``; TOML has no null); dict keys
    are quoted when they are not bare keys.

    >>> print(toml_value({"a-b": 1, "c.d": [0.5, "x"]}))
    {a-b = 1, "c.d" = [0.5, "x"]}
    """
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def toml_key(key) -> str:
    """``key`` as a TOML key: bare when it can be, else a quoted string."""
    import re

    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)

"""The ``ranking`` study kind: score candidate source models for a target before fine-tuning
(:func:`transferscope.ranking.rank_candidates`), optionally fine-tune each through the training
executors for ground truth (:func:`transferscope.ranking.check_ranking`), and write
``results/ranking.json``, ``results/ranking__scores.csv`` (a row per candidate, a column per
score), ``study.toml`` (the spec: a rerun), the findings and ``report.html``.
``transferscope rank`` builds a :class:`RankingSpec` from its options and runs it here: one path.

    kind = "ranking"
    target = "hymenoptera"
    [[candidates]]
    name = "lite0"
    model = "efficientnet_lite0"          # registered, timm:/torchvision:/hf:, run dir, file
    [[candidates]]
    name = "lite0-random"
    model = "efficientnet_lite0"
    init = "random"
    [fine_tune]                            # optional: fine-tune each for ground truth
    recipe = "quick"
    epochs = 2
    [accuracy]                             # optional: fine-tuned accuracies you already have
    lite0-random = 0.61
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from transferscope.errors import ConfigError, did_you_mean
from transferscope.studies.spec import ExecutorFields, toml_key, toml_value

__all__ = ["CandidateSpec", "fine_tune_accuracy", "FineTuneSpec", "RankingSpec", "run", "spec_toml",
           "validation_correct"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CandidateSpec(_Strict):
    name: str = Field(description="the candidate's name in the table and the report")
    model: str = Field(description="a registered architecture, timm:<name>, torchvision:<name>, "
                       "hf:<folder>, a run directory or a .safetensors file")
    init: str = Field("imagenet", description="weights of a model given by name: imagenet | "
                      "random | PATH")
    image_size: int | None = Field(None, ge=8, description="its input side (default: the "
                                   "study's image_size, else the model's own)")


class FineTuneSpec(_Strict):
    recipe: str = Field("quick", description="training recipe (`transferscope recipes`)")
    epochs: int | None = Field(None, ge=1, description="override the recipe's epochs")
    image_size: int | None = Field(None, ge=8, description="override the recipe's image size")
    batch_size: int | None = Field(None, ge=1, description="override the recipe's batch size")
    seed: int = 0


class RankingSpec(ExecutorFields, _Strict):
    """A ranking study file (see the module docstring)."""

    target: str = Field(description="target data set: a name under the data root, a folder "
                        "or a CSV")
    split: str = Field("train", description="the split the scores use (the target's training "
                       "images)")
    val_split: str = Field("val", description="the split fine-tuned accuracy is measured on")
    candidates: list[CandidateSpec] = Field(min_length=1, description="the candidate models")
    image_size: int | None = Field(None, ge=8, description="input side of every candidate "
                                   "(default: each model's own)")
    batch_size: int | None = Field(None, ge=1)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    seed: int = 0
    fine_tune: FineTuneSpec | None = Field(None, description="fine-tune each candidate given "
                                           "by name for ground truth (weighted Kendall tau and "
                                           "Pearson r of every score against its accuracy)")
    accuracy: dict[str, float] = Field(default_factory=dict, description="fine-tuned "
                                       "accuracy of candidates you already have (name -> "
                                       "accuracy): ground truth without fine-tuning here; "
                                       "[fine_tune] replaces it for the candidates it trains")
    check: list[dict] = Field(default_factory=list, description="[[check]] rules "
                              "(docs/ci-gate.md)")
    source: str | None = Field("imagenet-samples", description="ImageNet-labelled source "
                               "sample for paper 002's domain gap and width of the target "
                               "(context, the same for every candidate); \"\" to skip")

    @field_validator("accuracy")
    @classmethod
    def _accuracy_of_candidates(cls, v, info):
        names = [c.name for c in info.data.get("candidates") or []]
        for name, acc in v.items():
            if names and name not in names:
                raise ValueError(f"{name!r} is no candidate{did_you_mean(name, names)}; "
                                 f"candidates: {', '.join(names)}")
            if not math.isfinite(acc):
                raise ValueError(f"accuracy of {name!r} is {acc}; give a finite number")
        return v

    @field_validator("candidates")
    @classmethod
    def _unique(cls, v):
        from transferscope._paths import safe_component

        names = [c.name for c in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"candidate names must be unique; repeated: {', '.join(dup)}")
        for n in names:
            safe_component(n, "candidate name")
        return v


def _builder(c: CandidateSpec, size: int | None):
    from transferscope.studies.audit_memory import load_any_model

    def build():
        if Path(c.model).exists() or c.model.endswith((".safetensors", ".pt", ".pth")):
            model = load_any_model(c.model, c.init, None)
        else:  # by name: built for this side (fixed-size architectures need it)
            from transferscope.models import create_model

            model = create_model(c.model, init=c.init, image_size=size)
        if size:
            model.default_size = size  # its preprocessing at this side (recorded per row)
        return model
    return build


def fine_tune_accuracy(spec: RankingSpec, out: Path, data_root=None,
                       on_skip=None) -> dict[str, float]:
    """Fine-tune every candidate given by name (one training run each, through the study's
    executor) and return name -> final validation accuracy; candidates given as files or run
    directories are skipped (``on_skip(name, why)``)."""
    from transferscope.engine import TrainConfig, get_recipe
    from transferscope.engine.executor import TrainJob, run_trainings

    ft = spec.fine_tune
    jobs, names = [], []
    for c in spec.candidates:
        if Path(c.model).exists():
            if on_skip:
                on_skip(c.name, "given as a file or run directory: no architecture to "
                        "fine-tune from; fine-tune it yourself and pass its accuracy")
            continue
        recipe = get_recipe(ft.recipe, epochs=ft.epochs, batch_size=ft.batch_size,
                            image_size=ft.image_size or c.image_size or spec.image_size)
        cfg = TrainConfig(arch=c.model, init=c.init, data=spec.target, seed=ft.seed,
                          train_split=spec.split, val_split=spec.val_split, recipe=recipe)
        jobs.append(TrainJob(cfg, out / "runs" / c.name, data_root=data_root,
                             cpus=spec.run_cpus, gpus=spec.run_gpus, progress=None))
        names.append(c.name)
    if names:
        print(f"fine-tuning {len(names)} candidates ({ft.recipe}"
              f"{f', {ft.epochs} epochs' if ft.epochs else ''}, {spec.executor}) into "
              f"{out / 'runs'}", file=sys.stderr)
    results = run_trainings(jobs, spec.executor)
    return {n: r.final_val_accuracy for n, r in zip(names, results)}


def validation_correct(spec: RankingSpec, out: Path, names, data_root=None
                       ) -> dict[str, np.ndarray]:
    """Per validation image, whether each fine-tuned candidate (``OUT/runs/<name>``) classifies
    it right: ``(M,)`` bool, in the val split's order - what lets the ground truth's interval
    resample the images as well as the candidates (its mean is the run's ``val_acc``)."""
    from transferscope.data import image_folder
    from transferscope.engine import predict
    from transferscope.models.io import load_model

    val = image_folder(spec.target, spec.val_split or None, data_root=data_root)
    correct = {}
    for name in names:
        if not (out / "runs" / name / "model.safetensors").is_file():
            continue  # no finished run (accuracy from elsewhere): its interval says so
        pred = predict(load_model(out / "runs" / name), val, device=spec.device,
                       progress=False)
        correct[name] = (pred.logits.argmax(1) == pred.labels).numpy()
    return correct


def _factors(spec: RankingSpec, data, data_root) -> dict | None:
    """Paper 002's factors of the target against ``spec.source``, or None (said on stderr)
    when no source sample is given or found."""
    from transferscope.analyses.ranking import target_factors
    from transferscope.data import source_images
    from transferscope.errors import DataError

    if not spec.source:
        return None
    try:
        source = source_images(spec.source, data_root=data_root)
    except (DataError, ConfigError, OSError) as exc:
        print(f"source sample {spec.source!r} not found ({str(exc).splitlines()[0]}): the "
              "target's domain gap and width are not computed; set source = \"FOLDER\" or "
              "source = \"\"", file=sys.stderr)
        return None
    return target_factors(data, source, seed=spec.seed)


def spec_toml(spec: RankingSpec) -> str:
    r"""The study file of ``spec`` (settings left at their defaults omitted; the target and
    candidates given as existing paths made absolute), which :func:`load_any` reads back to
    an equal spec: ``OUT/study.toml``, so ``transferscope audit OUT/study.toml`` reruns it.

    >>> s = RankingSpec(target="hymenoptera", candidates=[{"name": "a", "model": "m"}],
    ...                 accuracy={"a": 0.5}, fine_tune={"epochs": 1})
    >>> print("\n".join(spec_toml(s).splitlines()[1:]))
    kind = "ranking"
    target = "hymenoptera"
    <BLANKLINE>
    [[candidates]]
    name = "a"
    model = "m"
    <BLANKLINE>
    [fine_tune]
    epochs = 1
    <BLANKLINE>
    [accuracy]
    a = 0.5
    """
    def absolute(p: str) -> str:
        return str(Path(p).resolve()) if Path(p).exists() else p

    data = spec.model_dump(exclude_defaults=True)
    data["target"] = absolute(data["target"])
    lines = ["# the ranking study that wrote this folder: rerun it with `transferscope audit "
             "study.toml --out DIR`", 'kind = "ranking"']
    tables: list[str] = []
    for c in data.pop("candidates"):
        c["model"] = absolute(c["model"])
        tables += ["", "[[candidates]]", *(f"{k} = {toml_value(v)}" for k, v in c.items())]
    for key in ("fine_tune", "accuracy"):
        if key in data:
            tables += ["", f"[{key}]", *(f"{toml_key(k)} = {toml_value(v)}"
                                         for k, v in data.pop(key).items())]
    for rule in data.pop("check", []):
        tables += ["", "[[check]]", *(f"{k} = {toml_value(v)}" for k, v in rule.items())]
    lines += [f"{k} = {toml_value(v)}" for k, v in data.items()]
    return "\n".join(lines + tables) + "\n"


def run(spec: RankingSpec, out: str | os.PathLike, data_root=None):
    """Rank, (fine-tune,) write results, findings, ``study.toml`` and the report; returns
    ``{"ranking": result}``. Ground truth: the ``accuracy`` given, replaced by the fine-tuned
    accuracy of the candidates ``fine_tune`` trains."""
    from transferscope.analyses.ranking import ranking_result
    from transferscope.data import image_folder
    from transferscope.engine import resolve_device
    from transferscope.models.registry import check_model_name
    from transferscope.ranking import check_ranking, rank_candidates
    from transferscope.report import write_report

    out = Path(out)
    resolve_device(spec.device)
    for c in spec.candidates:  # a typo fails here, before any forward pass
        if not Path(c.model).exists() and not c.model.endswith((".safetensors", ".pt")):
            try:
                check_model_name(c.model)
            except ConfigError as exc:
                raise ConfigError(f"candidate {c.name!r}: {exc}") from None
    data = image_folder(spec.target, spec.split or None, data_root=data_root)
    if data.num_classes < 2:  # refused by rank_candidates too; here before OUT is made
        rank_candidates(data, {})
    out.mkdir(parents=True, exist_ok=True)
    spec_text = spec_toml(spec)
    (out / "study.toml").write_text(spec_text)
    problems: dict[str, str] = {}

    def bad(name, why):
        problems[name] = why
        print(f"{name}: not ranked, {why}", file=sys.stderr)

    table = rank_candidates(data, {c.name: _builder(c, c.image_size or spec.image_size)
                                   for c in spec.candidates},
                            batch_size=spec.batch_size, device=spec.device, seed=spec.seed,
                            on_error=bad)
    accuracy, correct = dict(spec.accuracy), None
    if spec.fine_tune is not None:
        ok = [c for c in spec.candidates if c.name not in problems]
        tuned = fine_tune_accuracy(spec.model_copy(update={"candidates": ok}), out,
                                   data_root, on_skip=bad)
        accuracy.update(tuned)
        correct = validation_correct(spec, out, list(tuned), data_root)
    check = (check_ranking(table, accuracy, correct=correct, seed=spec.seed) if accuracy
             else None)
    result = ranking_result(table, check, accuracy, _factors(spec, data, data_root))
    result.summary["models"] = {c.name: {"model": c.model, "init": c.init}
                                for c in spec.candidates}  # rank:OUT as a study's source
    result.save(out)
    write_report(out, {"ranking": result}, title=f"ranking source candidates for {spec.target}",
                 spec_text=spec_text)
    return {"ranking": result}

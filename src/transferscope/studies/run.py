"""Running a study: build the :class:`~transferscope.analyses.AuditContext` (training the
models that are missing, reusing finished runs under ``out/runs``), run the registered
analyses it selects through the shared cache and write ``out/results``, ``out/figures`` and
``out/report.html``.
"""

from __future__ import annotations

import os
from pathlib import Path

from transferscope import roles
from transferscope._paths import run_dir, safe_component
from transferscope.analyses.context import ModelEntry
from transferscope.errors import ConfigError
from transferscope.studies.demo_toml import DEMO_TOML
from transferscope.studies.spec import (ModelSpec, StudySpec, load_study, parse_study,
                                       quick, study_from_dict)

__all__ = ["build_context", "check", "load_any", "model_entries", "run", "run_file", "run_study",
           "selected_analyses", "Study", "study_kinds", "study_options", "train_jobs",
           "train_models"]


def _load_given(m: ModelSpec):
    """A model the study names by ``path``: a run directory or a weights file."""
    from transferscope.engine import load_run
    from transferscope.models import load_model

    path = Path(m.path)
    return load_run(path) if path.is_dir() else load_model(path)


def train_jobs(spec: StudySpec, out: Path, data_root=None, tracker=None) -> dict:
    """One :class:`~transferscope.engine.executor.TrainJob` per model the study trains
    (``path`` unset), keyed by model name; its run directory is ``out/runs/NAME``."""
    from transferscope.engine import TrainConfig, get_recipe
    from transferscope.engine.executor import TrainJob

    jobs = {}
    for m in spec.models:
        if m.path is not None:
            continue
        cfg = TrainConfig(arch=m.arch, init=m.init, data=spec.target.data, seed=m.seed,
                          train_split=spec.target.train_split, val_split=spec.target.val_split,
                          recipe=get_recipe(m.recipe, epochs=m.epochs, batch_size=m.batch_size,
                                            lr=m.lr, image_size=m.image_size or spec.image_size))
        extra = {"device": spec.device}
        if tracker:
            extra["on_epoch"] = tracker.epoch_logger(m.name)
        jobs[m.name] = TrainJob(cfg, run_dir(out, m.name, "models.name"), data_root=data_root,
                                keep_checkpoints=m.keep_checkpoints, cpus=spec.run_cpus,
                                gpus=spec.run_gpus, progress=None, extra=extra)
    return jobs


def train_models(spec: StudySpec, out: Path, data_root=None, tracker=None) -> dict:
    """Train (or resume, or find finished) every model of the study that has no ``path``,
    through the study's executor (``local``: one after another here; ``ray``: one Ray task
    each); returns ``{name: TransferModel}`` with the final weights read back from disk."""
    from transferscope._progress import log
    from transferscope.engine import load_run
    from transferscope.engine.executor import run_trainings

    jobs = train_jobs(spec, out, data_root, tracker)
    if not jobs:
        return {}
    log(f"[bold]training[/bold] {', '.join(jobs)} ({spec.executor} executor)")
    done = run_trainings(list(jobs.values()), executor=spec.executor)
    if tracker and spec.executor != "local":  # Ray tasks cannot call back: log afterwards
        for name, res in zip(jobs, done):
            for row in res.metrics:
                tracker.epoch_logger(name)(row)
    return {name: load_run(res.run_dir) for name, res in zip(jobs, done)}


def build_context(spec: StudySpec, out: Path, data_root=None, train_missing: bool = True,
                  tracker=None):
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
    target_train = _train_split_or_none(spec, data_root)
    if train_missing and target_train is None and any(m.path is None for m in spec.models):
        image_folder(spec.target.data, spec.target.train_split, data_root=data_root)  # says why
    trained = train_models(spec, out, data_root, tracker) if train_missing else {}
    models = {}
    for m in spec.models:
        if m.name in trained:
            models[m.name] = trained[m.name]
        elif m.path is not None:
            log(f"[bold]model[/bold] {m.name} from {m.path}")
            models[m.name] = _load_given(m)
        else:
            run = run_dir(out, m.name, "models.name")
            if not (run / "model.safetensors").exists():
                raise ConfigError(f"model '{m.name}' has no finished run at {run}; run "
                                  f"`transferscope audit` on the study first")
            models[m.name] = load_run(run)
    source = create_model(spec.source.arch, init=spec.source.init,  # a ViT at the study's size
                          image_size=spec.image_size if ":" in spec.source.arch else None)
    extra = {a: create_model(a, init=spec.source.init,
                             image_size=spec.image_size if ":" in a else None) for a in
             {m.arch for m in spec.models if m.init == "imagenet" and m.arch} - {source.arch}}
    return AuditContext(source, models, target_val, sets, image_size=spec.image_size,
                        batch_size=spec.batch_size, extra_sources=extra,
                        precision=spec.precision, device=spec.device,
                        entries=model_entries(spec, models, out),
                        target_train_data=target_train)


def _train_split_or_none(spec: StudySpec, data_root=None):
    """The target training split (the detector's v(c) counts it), or None if it is absent."""
    from transferscope.data import image_folder
    from transferscope.errors import DataError

    try:
        return image_folder(spec.target.data, spec.target.train_split, data_root=data_root)
    except (DataError, ConfigError, OSError):
        return None


def _role(spec: StudySpec, m: ModelSpec) -> str:
    """P-T, RI-T or other (:mod:`transferscope.roles`) for a model of ``spec``: a model
    started from the study's source weights file is P-T too."""
    return roles.OTHER if m.path is not None else roles.role_of_init(m.init, spec.source.init)


def model_entries(spec: StudySpec, models: dict, out: Path) -> dict[str, ModelEntry]:
    """Role, architecture, init, seed and run directory of every model of the study: models
    the study trains from ``"imagenet"`` / ``"pretrained"`` - or from the weights file that is
    the study's source (``init`` equal to ``source.init``) - are fine-tuned (P-T), from
    ``"random"`` from scratch (RI-T); loaded models (``path``) have role ``"other"``."""
    entries = {}
    for m in spec.models:
        trained = m.path is None
        run = run_dir(out, m.name, "models.name") if trained else Path(m.path)
        entries[m.name] = ModelEntry(
            m.name, _role(spec, m), models[m.name].arch,
            init=m.init if trained else None, seed=m.seed if trained else None,
            run_dir=run if run.is_dir() else None)
    return entries


def check(spec: StudySpec) -> None:
    """Everything about an audit study that can fail without training, checked before the
    first run: model names usable as folder names, loaded models' paths present, and - when
    the what-is-transferred analyses are selected - a P-T or RI-T model of the source
    architecture for them (ConfigError, one line naming the key)."""
    for m in spec.models:
        safe_component(m.name, "key 'models.name'")
        if m.path is not None and not Path(m.path).expanduser().exists():
            raise ConfigError(f"key models '{m.name}' path: {m.path} does not exist; give a "
                              "finished run directory or .safetensors file, or drop 'path' "
                              "to train the model")
    if spec.analyses.transfer != "none" and not any(
            _role(spec, m) in (roles.PT, roles.RIT) and m.arch == spec.source.arch
            for m in spec.models):
        raise ConfigError(
            "key 'analyses.transfer': papers 003/004 need models of the source architecture "
            f"({spec.source.arch}) trained from 'imagenet' (P-T) or 'random' (RI-T) init; add "
            "one or set transfer = \"none\"")


def run_study(spec: StudySpec, out: str | os.PathLike, *, spec_text: str | None = None,
              data_root=None, log_to: str | None = None):
    """Train/load the models, run the selected analyses, write results and report.html;
    ``log_to`` (or the spec's) also logs to TensorBoard or MLflow. Known data sets missing
    from the data root are downloaded first (fresh machine; offline: one line per set)."""
    from transferscope.data.fetch import ensure_sets

    from transferscope._lock import writer_lock

    check(spec)  # before any download or training
    ensure_sets([spec.target.data, *spec.source_images.sets], data_root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with writer_lock(out, f"study {spec.name} into {out}"):  # a second study on out waits
        return _run_study_tracked(spec, out, spec_text, data_root, log_to)


def _run_study_tracked(spec: StudySpec, out: Path, spec_text, data_root, log_to):
    from transferscope.trackers import open_tracker

    tracker = open_tracker(log_to or spec.log_to, out, spec.name)
    try:
        if tracker:
            tracker.log_params(spec.model_dump())
        results, report = _run_study(spec, out, spec_text, data_root, tracker)
        if tracker:
            tracker.log_results(out, results, report)
    finally:
        if tracker:
            tracker.close()
    return results, report


def selected_analyses(spec: StudySpec) -> list[str]:
    """The analyses a study runs, in report order: each section's ``all`` / ``none`` / list."""
    from transferscope.analyses import list_analyses

    out = []
    from transferscope.analyses._registry import MEMORY_SECTIONS

    for chosen, sections in ((spec.analyses.memory, MEMORY_SECTIONS),
                             (spec.analyses.transfer, ("what_transferred",)),
                             (spec.analyses.transferability, ("transferability",))):
        out += ([] if chosen == "none" else [n for s in sections for n in list_analyses(
            s, runnable=True)] if chosen == "all" else list(chosen))
    return out


def study_options(spec: StudySpec) -> dict[str, dict]:
    """Every analysis's options from a study: ``[analyses.transfer_options]`` (the older
    shorthand), overridden by ``[analyses.options.<name>]``."""
    from transferscope.studies.what_transferred import transfer_options

    t = spec.analyses.transfer_options
    options = transfer_options(t.lambdas, t.bn_reestimate, t.criticality_images,
                               t.criticality_modules)
    for name, given in spec.analyses.options.items():
        options.setdefault(name, {}).update(given)
    return options


def _run_study(spec: StudySpec, out: Path, spec_text, data_root, tracker):
    from transferscope.analyses._transfer import transfer_inputs
    from transferscope.report import write_report
    from transferscope.studies.runner import run_analyses

    if spec_text is not None:
        (out / "study.toml").write_text(spec_text)
    ctx = build_context(spec, out, data_root, tracker=tracker)
    names = selected_analyses(spec)
    if spec.analyses.transfer != "none":
        transfer_inputs(ctx)  # papers 003/004 need P-T / RI-T models: say so, do not skip
    named = set(spec.analyses.memory) if isinstance(spec.analyses.memory, list) else set()
    results = run_analyses(ctx, names, out, study_options(spec),
                           composite_params=spec.analyses.composites.model_dump(),
                           force=named)
    results = {n: results[n] for n in names if n in results}  # report order
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

    def run(self, out: str | os.PathLike, data_root=None, log_to: str | None = None):
        """Train, analyse, report (``log_to="tensorboard"|"mlflow"`` also logs there);
        returns ``(results, report_path)``."""
        return run_study(self.spec, out, spec_text=self.text, data_root=data_root,
                         log_to=log_to)


def run(spec: StudySpec, out: str | os.PathLike, data_root=None):
    """The study kind ``audit``: :func:`run_study` without the TOML text."""
    return run_study(spec, out, data_root=data_root)


def study_kinds() -> dict[str, tuple[type, object]]:
    """``kind`` of a study file -> (its typed spec, its ``run(spec, out, data_root)``);
    the registry is :mod:`transferscope.studies.kinds`."""
    from transferscope.studies.kinds import study_kinds as kinds

    return {k.name: (k.spec, k.run) for k in kinds().values()}


def load_any(path: str | os.PathLike):
    """The typed spec of any study file: ``kind = "..."`` at its top selects the study kind
    (default ``audit``, the :class:`StudySpec` format)."""
    from transferscope.studies.spec import build_spec, tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}; `transferscope demo --print-spec` "
                          "prints an example to start from")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax there") from exc
    kind = data.pop("kind", "audit")
    kinds = study_kinds()
    if kind not in kinds:
        from transferscope.errors import did_you_mean

        raise ConfigError(f"{path}: key 'kind': unknown study kind {kind!r}"
                          f"{did_you_mean(str(kind), kinds)}; use one of {', '.join(kinds)}")
    if kind == "audit":
        return study_from_dict(data, str(path))
    cls = kinds[kind][0]
    if "check" in data and "check" not in cls.model_fields:  # `transferscope check`'s rules
        from transferscope.studies.check_rules import rules_from_table

        rules_from_table(data.pop("check"), str(path))  # one clear line before it runs
    return build_spec(cls, {**data, **({"kind": kind} if "kind" in cls.model_fields else {})},
                      str(path))


def run_file(path: str | os.PathLike, out: str | os.PathLike, data_root=None):
    """Run any study file (see :func:`load_any`) into ``out``."""
    spec = load_any(path)
    if isinstance(spec, StudySpec):
        return run_study(spec, out, spec_text=Path(path).read_text(), data_root=data_root)
    from transferscope.studies.kinds import kind_of

    return kind_of(spec).run(spec, out, data_root)

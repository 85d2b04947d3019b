"""Study kinds: ``kind = "..."`` at the top of a study file names one. Each kind is a typed spec
(a pydantic model) and ``run(spec, out, data_root)``; every kind's run ends in one
:class:`StudyOutput`. Adding a kind is one registration (in one file)::

    register_study_kind("my_kind", MySpec, my_run)
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from transferscope.errors import ConfigError

__all__ = ["as_output", "kind_of", "register_study_kind", "run_kind", "study_kinds", "StudyKind",
           "StudyOutput"]


@dataclass
class StudyOutput:
    """What a study run leaves: its output folder, results by analysis name and the report
    (None when the kind writes none)."""

    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None


@dataclass(frozen=True)
class StudyKind:
    name: str
    spec: type
    run: Callable[..., Any]


_KINDS: dict[str, StudyKind] = {}
#: the built-in kinds, imported on first use (their modules import the analyses)
_BUILTIN = {"audit": ("transferscope.studies.run", "StudySpec", "run"),
            "transferability": ("transferscope.studies.transferability",
                                "TransferabilitySpec", "run"),
            "block_shuffle": ("transferscope.studies.training_runs", "BlockShuffleSpec", "run"),
            "pretraining_checkpoints": ("transferscope.studies.training_runs",
                                        "CheckpointSpec", "run"),
            "remedies": ("transferscope.studies.remedies", "RemedySpec", "run"),
            "ranking": ("transferscope.studies.ranking", "RankingSpec", "run")}


def register_study_kind(name: str, spec: type, run: Callable[..., Any]) -> StudyKind:
    """Register study kind ``name``: ``spec`` parses its study file (``kind`` key removed
    unless the spec declares it), ``run(spec, out, data_root)`` runs it."""
    if not name.isidentifier():
        raise ConfigError(f"study kind {name!r}: use a Python identifier")
    _KINDS[name] = StudyKind(name, spec, run)
    return _KINDS[name]


def _load_builtin() -> None:
    for name, (module, spec, run) in _BUILTIN.items():
        if name not in _KINDS:
            mod = importlib.import_module(module)
            _KINDS[name] = StudyKind(name, getattr(mod, spec), getattr(mod, run))


def study_kinds() -> dict[str, StudyKind]:
    """Every study kind by name (built-in ones first)."""
    _load_builtin()
    return dict(_KINDS)


def kind_of(spec) -> StudyKind:
    """The kind whose spec class ``spec`` is an instance of."""
    for kind in study_kinds().values():
        if type(spec) is kind.spec:
            return kind
    raise ConfigError(f"{type(spec).__name__} is the spec of no registered study kind")


def run_kind(spec, out: str | os.PathLike, data_root=None, **kwargs) -> StudyOutput:
    """Run any study spec through its kind and return its :class:`StudyOutput`."""
    ret = kind_of(spec).run(spec, out, data_root, **kwargs)
    return as_output(ret, Path(out))


def as_output(ret, out: Path) -> StudyOutput:
    """A kind's return value as a :class:`StudyOutput` (results dict, one result, or
    ``(results, report)``)."""
    if isinstance(ret, StudyOutput):
        return ret
    report = out / "report.html"
    if isinstance(ret, tuple) and len(ret) == 2:
        results, report = ret
    elif isinstance(ret, dict):
        results = ret
    elif ret is None:
        results = {}
    else:
        results = {getattr(ret, "name", "result"): ret}
    return StudyOutput(out, results, Path(report) if report and Path(report).exists() else None)

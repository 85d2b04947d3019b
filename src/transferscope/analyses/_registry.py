"""Analysis registry: one registration per analysis, read by the runners, report, study
validation and the ``transferscope analyses`` command.

An analysis module ``transferscope/analyses/<name>.py`` registers itself once::

    class BiasOptions(AnalysisOptions):
        top: int = Field(10, ge=1, description="classes listed per model")

    @register_analysis("interference_bias", title="Interference bias of source classes",
                       paper="paper 000, eq. 1, Table 2", section="memory",
                       options=BiasOptions, finding=finding)
    def run(ctx: AuditContext, top: int = 10) -> AnalysisResult: ...

The name is the module name and the :class:`AnalysisResult` name. ``run`` takes the
:class:`~transferscope.analyses.context.AuditContext` and the options as keyword arguments;
``finding(result) -> Finding | None`` writes the report's one plain-words sentence. Results
made by a study that trains its own models (block shuffling, remedies, ...) register
``run=None`` and name the study in ``made_by``.

Example:
    >>> from transferscope.analyses import get_analysis, list_analyses
    >>> "interference_bias" in list_analyses("memory")
    True
    >>> get_analysis("interference_bias").paper
    'paper 000, eq. 1, Table 2'
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from transferscope._paths import safe_component
from transferscope.errors import ConfigError
from transferscope.findings import Finding

__all__ = ["AnalysisOptions", "AnalysisSpec", "DRILL_WIDGETS", "finding_of", "first_set", "fmt",
           "GALLERY_WIDGETS", "get_analysis", "list_analyses", "MEMORY_SECTIONS", "NEEDS",
           "NoOptions", "register_analysis", "register_section", "run_analysis", "SECTIONS",
           "summary_intervals", "unregister_analysis", "validate_options"]


class AnalysisOptions(BaseModel):
    """Base of every analysis' options model: unknown options are errors.

    ``shorthand``: the keys of a study file's ``[analyses.transfer_options]`` (the older
    shared table) this model reads, shorthand key -> its own field."""

    model_config = ConfigDict(extra="forbid")
    shorthand: ClassVar[dict[str, str]] = {}


class NoOptions(AnalysisOptions):
    """An analysis without options."""


@dataclass(frozen=True)
class AnalysisSpec:
    """Everything the runners, report and CLI know about one analysis."""

    name: str
    title: str
    paper: str
    section: str
    options: type[AnalysisOptions]
    run: Callable[..., Any] | None
    finding: Callable[[Any], Finding | None] | None
    order: float
    made_by: str | None = None
    applies: Callable[[Any], bool] | None = None
    charts: dict[str, dict] | None = None  # result table -> client-side chart (report/page.py)
    resolution: Callable[[Any, dict], list[str]] | None = None  # (result, results) -> notes
    gallery: dict | None = None  # how the report shows the result's "gallery" table
    drill: tuple[dict, ...] = ()  # panels of the per-source-class drill-down
    needs: tuple[str, ...] = ()  # shared passes the runner prepares first (NEEDS)

    def applicable(self, ctx) -> bool:
        """Whether ``run(ctx)`` has what it needs (e.g. two P-T models for a barrier)."""
        return self.run is not None and (self.applies is None or bool(self.applies(ctx)))

    @property
    def heading(self) -> str:
        """Report heading: the title with its paper reference."""
        return f"{self.title} ({self.paper})"


# Report sections in page order: key -> heading.
SECTIONS: dict[str, str] = {
    "memory": "Source-domain memory and interference (papers 000 and 001)",
    "transferability": "Transferability and domain statistics (paper 002)",
    "what_transferred": "What is being transferred (papers 003 and 004)",
    "during_training": "During training (monitor curves)",
    "remedies": "Remedies for lingering memories",
}
_REGISTRY: dict[str, AnalysisSpec] = {}
GALLERY_WIDGETS = ("predictions", "maps", "strips")  # renderers in report/assets/drill.js
DRILL_WIDGETS = ("gallery", "bars", "shares")
#: shared work done once by the runner for every analysis that declares it in ``needs=``
NEEDS = {"source_logits": "every model's logits on every source-image set, one decoding pass"}
_LOADED = False


def register_section(key: str, heading: str) -> None:
    """Add a report section (appended after the built-in ones)."""
    SECTIONS.setdefault(key, heading)


def register_analysis(name: str, *, title: str, paper: str, section: str,
                      options: type[AnalysisOptions] | None = None,
                      run: Callable[..., Any] | None = None,
                      finding: Callable[[Any], Finding | None] | None = None,
                      order: float | None = None, made_by: str | None = None,
                      applies: Callable[[Any], bool] | None = None,
                      charts: dict[str, dict] | None = None,
                      resolution: Callable[[Any, dict], list[str]] | None = None,
                      gallery: dict | None = None, drill: tuple[dict, ...] | list = (),
                      needs: tuple[str, ...] | list = ()):
    """Register an analysis; use as a decorator of ``run`` or call it with ``run=``.

    Args:
        name: the module name and the result name (``results/<name>.json``).
        title, paper: the report heading is ``f"{title} ({paper})"``.
        section: a key of :data:`SECTIONS`.
        options: a pydantic model (subclass of :class:`AnalysisOptions`) of ``run``'s keyword
            arguments; validated before ``run`` is called. It is the one home of their
            defaults: ``run(ctx, *, name: type, ...)`` writes none, registration gives them.
        finding: ``finding(result) -> Finding | None``, the report's sentence.
        order: position within the section (default: registration order).
        made_by: for results without ``run(ctx)``: the study that makes them.
        applies: ``applies(ctx) -> bool``; runners skip the analysis where it is false.
        charts: result table name -> the report's interactive chart of it (the keys of
            :func:`transferscope.report.page.chart_spec`: ``categories``/``total`` bars or a
            ``kind="heatmap"``; ``replaces`` names the static figure it stands in for).
        resolution: ``resolution(result, results) -> [note, ...]``: where a measure rests on
            few samples (helpers in :mod:`transferscope.analyses._resolution`).
        gallery: how the report shows the result's ``gallery`` table (its thumbnails):
            ``widget`` (``"predictions"``: images with each model's predicted class;
            ``"maps"``: an image, the source map and each model's map; ``"strips"``: a
            class's image and views), ``by`` (the source-class column), and, to show it in
            the section too, ``title`` and ``note``; ``replaces`` names a static figure.
        drill: the panels this analysis adds to a source class's drill-down, in order:
            ``{"widget": "gallery", "heading"}`` (its gallery's rows of the class),
            ``{"widget": "bars", "table", "value", "heading"}`` (one bar per model) or
            ``{"widget": "shares", "table", "prefix", "heading"}`` (stacked shares of the
            columns named ``prefix...]``, e.g. ``B[target]``).
        needs: shared work the runner does once before the analyses that need it, keys of
            :data:`NEEDS` (``"source_logits"``: every model's logits on the source images).
    """
    safe_component(name, "analysis name")  # results/<name>.json, figures/<name>__*.png
    if section not in SECTIONS:
        raise ConfigError(f"analysis {name!r}: unknown report section {section!r}; use one of "
                          f"{', '.join(SECTIONS)} or register_section() first")
    if gallery and gallery.get("widget") not in GALLERY_WIDGETS:
        raise ConfigError(f"analysis {name!r}: gallery widget {gallery.get('widget')!r}; use "
                          f"one of {', '.join(GALLERY_WIDGETS)}")
    for panel in drill:
        if panel.get("widget") not in DRILL_WIDGETS:
            raise ConfigError(f"analysis {name!r}: drill-down widget {panel.get('widget')!r}; "
                              f"use one of {', '.join(DRILL_WIDGETS)}")
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise ConfigError(f"analysis {name!r}: needs {unknown[0]!r}; use one of "
                          f"{', '.join(NEEDS)}")
    opts = options or NoOptions
    if not (isinstance(opts, type) and issubclass(opts, BaseModel)):
        raise ConfigError(f"analysis {name!r}: options must be a pydantic model class")

    def deco(fn):
        if fn is not None and opts is not NoOptions:
            _defaults_from_options(fn, opts)
        _REGISTRY[name] = AnalysisSpec(name, title, paper, section, opts, fn, finding,
                                       float(1000 + len(_REGISTRY) if order is None else order),
                                       made_by, applies, dict(charts or {}), resolution,
                                       dict(gallery) if gallery else None,
                                       tuple(dict(p) for p in drill), tuple(needs))
        return fn

    if run is not None or made_by is not None:
        deco(run)
        return run
    return deco


def _defaults_from_options(fn: Callable, options: type[AnalysisOptions]) -> None:
    """Give ``fn``'s keyword-only parameters that write no default of their own the options
    model's defaults (as the study path passes them, ``model_dump()``), so a default lives
    only in the options model and ``module.run(ctx)`` computes what a study computes."""
    import inspect

    try:
        defaults = options().model_dump()
    except ValidationError:  # a required option: only the fields that have a default
        defaults = {k: f.get_default(call_default_factory=True)
                    for k, f in options.model_fields.items() if not f.is_required()}
    own = fn.__kwdefaults__ or {}
    fill = {k: defaults[k] for k, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and k not in own and k in defaults}
    if fill:
        fn.__kwdefaults__ = {**own, **fill}


def unregister_analysis(name: str) -> None:
    """Remove a registration (tests register toy analyses)."""
    _REGISTRY.pop(name, None)


def _load_builtin() -> None:
    """Import every module of :mod:`transferscope.analyses` (each registers itself)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import transferscope.analyses as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_") and mod.name != "context":
            importlib.import_module(f"{pkg.__name__}.{mod.name}")


#: the sections a study's ``analyses.memory`` selects from (``"all"``: every applicable one)
MEMORY_SECTIONS = ("memory", "during_training")


def list_analyses(section: str | None = None, *, runnable: bool = False) -> list[str]:
    """Registered names in report order (sections, then ``order``); ``runnable``: only those
    with a ``run(ctx)``."""
    _load_builtin()
    if section is not None and section not in SECTIONS:
        raise ConfigError(f"unknown report section {section!r}; use one of {', '.join(SECTIONS)}")
    rank = {k: i for i, k in enumerate(SECTIONS)}
    specs = sorted(_REGISTRY.values(), key=lambda s: (rank[s.section], s.order))
    return [s.name for s in specs if (section is None or s.section == section)
            and (not runnable or s.run is not None)]


def get_analysis(name: str) -> AnalysisSpec:
    _load_builtin()
    if name not in _REGISTRY:
        from transferscope.errors import did_you_mean

        raise ConfigError(f"unknown analysis {name!r}{did_you_mean(name, list_analyses())}; "
                          f"known: {', '.join(list_analyses())} "
                          "(`transferscope analyses` lists them)")
    return _REGISTRY[name]


def validate_options(name: str, options: dict | None = None) -> AnalysisOptions:
    """The options model of ``name`` built from ``options``; errors name the option."""
    spec = get_analysis(name)
    try:
        return spec.options(**(options or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(options)"
        raise ConfigError(f"analysis {name!r}: option '{loc}': {err['msg']}; its options are "
                          f"{', '.join(spec.options.model_fields) or 'none'}") from exc


def run_analysis(name: str, ctx, options: dict | None = None):
    """Validate ``options`` and run analysis ``name`` on ``ctx``."""
    spec = get_analysis(name)
    if spec.run is None:
        raise ConfigError(f"analysis {name!r} is made by {spec.made_by}, not from an audit "
                          "context; run that study instead")
    opts = validate_options(name, options)
    return spec.run(ctx, **opts.model_dump())


def finding_of(result) -> Finding | None:
    """The registered finding of ``result`` (``None`` if it is not registered or has none)."""
    _load_builtin()
    spec = _REGISTRY.get(result.name)
    if spec is None or spec.finding is None:
        return None
    found = spec.finding(result)
    if isinstance(found, str):  # a plain HTML sentence (older plug-in analyses)
        found = Finding.from_html(found)
    if found is None:
        return None
    if not found.estimates:  # not yet migrated: the summary's ``<metric>_ci95`` intervals
        from dataclasses import replace

        found = replace(found, estimates=tuple(summary_intervals(result.summary)))
    return found.with_analysis(result.name)


def summary_intervals(summary, path: tuple[str, ...] = ()) -> list:
    """``(label, Interval)`` for every ``<metric>_ci95`` entry of a summary (with the ``n`` and
    ``unit`` stored beside it, if any).

    >>> summary_intervals({"m": {"recall": 0.5, "recall_ci95": [0.4, 0.6], "n": 9}})[0][1].n
    9
    """
    from transferscope.stats import Interval

    out = []
    if isinstance(summary, dict):
        for k, v in summary.items():
            if str(k).endswith("_ci95") and isinstance(v, (list, tuple)) and len(v) == 2:
                base = str(k).removesuffix("_ci95")
                val = summary.get(base)
                val = float(val) if isinstance(val, (int, float)) else float("nan")
                lo, hi = (float("nan") if x is None else float(x) for x in v)
                out.append((" ".join(path + (base,)),
                            Interval(val, lo, hi, str(summary.get("unit", "item")),
                                     int(summary.get("n", 0) or 0))))
            elif isinstance(v, dict):
                out += summary_intervals(v, path + (str(k),))
    return out


def fmt(v: Any) -> str:
    """A number as the report writes it (3 decimals below 10, else 1; NaN/None empty)."""
    import html

    if v is None:
        return ""
    if isinstance(v, float):
        return "" if v != v else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def first_set(summary: dict) -> dict[str, dict]:
    """Entries ``"<set>/<model>"`` of the first source-image set, keyed by model.

    >>> first_set({"a/m1": 1, "a/m2": 2, "b/m1": 3})
    {'m1': 1, 'm2': 2}
    """
    sets = list(dict.fromkeys(k.split("/", 1)[0] for k in summary))
    return {k.split("/", 1)[1]: v for k, v in summary.items()
            if sets and k.startswith(sets[0] + "/")}

"""The explorable parts of the HTML report, still one self-contained file.

Every table is embedded once as JSON (``<script type="application/json">``, with ``<``, ``>``
and ``&`` written as ``\\u003c``...) and rendered by a small inlined script
(``report/assets/report.js`` and ``drill.js``): complete, sortable (numeric-aware), filterable, paginated and
downloadable as CSV. Rows of source classes open a drill-down (recall per model, bias toward
each target class, the class's image and views, its composites with each model's prediction,
Grad-CAM maps side by side) built from the analyses' galleries (:mod:`.analyses._thumbs`).
Everything from data reaches the page through ``textContent`` or :func:`html.escape`; wnids
get their ImageNet class names beside them.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from transferscope._paths import safe_component
from transferscope.analyses._registry import _REGISTRY, SECTIONS, _load_builtin
from transferscope.analyses._resolution import FEW_SAMPLES, REMEDY
from transferscope.data.imagenet import imagenet_names, imagenet_wnids, wnid_to_index

__all__ = ["asset", "chart_spec", "drill_panels", "IMAGE_BUDGET", "model_colours", "model_key",
           "PALETTE", "ReportPage", "resolution_notes", "script", "script_json",
           "source_class_columns", "SOURCE_COLOUR", "table_data", "with_class_names"]

#: One colour per model throughout (Tableau 10 without its grey); source models are grey.
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#17becf", "#bcbd22", "#8c564b"]
SOURCE_COLOUR = "#555555"
IMAGE_BUDGET = 10_000_000  # bytes of embedded thumbnails (base64) per report

_WNID = re.compile(r"\b(n\d{8})\b(?! \()")


def _spec(analysis: str):
    """The analysis's registration (None for results no registered analysis made)."""
    _load_builtin()
    return _REGISTRY.get(analysis)


def chart_spec(analysis: str, table: str) -> dict | None:
    """The client-side chart an analysis registered for one of its tables (``charts=`` of
    :func:`~transferscope.analyses.register_analysis`), else None."""
    spec = _spec(analysis)
    return (spec.charts or {}).get(table) if spec is not None else None


def drill_panels(results: dict) -> list[dict]:
    """The drill-down's panels in page order: each analysis's registered ``drill=`` panels,
    ``{"analysis", "widget", ...}``, for the analyses with results."""
    sections = list(SECTIONS)
    specs = sorted((s for s in map(_spec, results) if s is not None and s.drill),
                   key=lambda s: (sections.index(s.section), s.order))
    return [{"analysis": s.name, **p} for s in specs for p in s.drill]


def asset(name: str) -> str:
    """Text of a file shipped in ``transferscope/report/assets``."""
    return resources.files("transferscope.report").joinpath("assets", name).read_text()


def script() -> str:
    """The page's script: ``report.js`` and ``drill.js`` in one strict-mode function scope."""
    return ('(function () {\n"use strict";\n' + asset("report.js") + asset("drill.js")
            + "})();\n")


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script`` or ``<!--``).

    Example:
        >>> script_json({"a": "</script><b>&"})
        '{"a":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026"}'
    """
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def with_class_names(text: str, for_html: bool = False) -> str:
    """Put the ImageNet class name beside every wnid in ``text`` (escaped when ``for_html``).

    Example:
        >>> with_class_names("B[n01440764]")
        'B[n01440764 (tench)]'
    """
    index, names = wnid_to_index(), imagenet_names()

    def sub(m: re.Match) -> str:
        i = index.get(m.group(1))
        if i is None:
            return m.group(0)
        return f"{m.group(1)} ({html.escape(names[i]) if for_html else names[i]})"
    return _WNID.sub(sub, text)


def source_class_columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    """``(index column, name column)`` pairs that hold ImageNet source classes: the name column
    (``class name`` for ``class``, ``background name`` for ``background (class)``) agrees with
    the ImageNet name of every index."""
    names, out = imagenet_names(), []
    for col in df.columns:
        name_col = next((n for n in (f"{col} name", f"{str(col).removesuffix(' class')} name")
                         if n in df.columns and n != col), None)
        if name_col is None or not len(df):
            continue
        idx = pd.to_numeric(df[col], errors="coerce")
        ok = idx.notna() & (idx % 1 == 0) & (idx >= 0) & (idx < len(names))
        if ok.all() and all(names[int(i)] == str(n) for i, n in zip(idx, df[name_col])):
            out.append((col, name_col))
    return out


def _kind(s: pd.Series) -> str:
    vals = [v for v in s if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if vals and all(isinstance(v, bool) for v in vals):
        return "bool"
    if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "int" if all(float(v).is_integer() for v in vals) else "float"
    return "num" if not vals and pd.api.types.is_numeric_dtype(s) else "str"


def _cell(v: Any, kind: str, names: bool) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if kind == "int":
        return int(v)
    if kind in ("float", "num"):
        f = float(v)
        return float(f"{f:.6g}") if math.isfinite(f) else None
    if kind == "bool":
        return bool(v)
    return with_class_names(str(v)) if names else str(v)


def table_data(df: pd.DataFrame, raw_columns: tuple[str, ...] = ("image",)) -> dict:
    """``{"columns", "kinds", "rows", "classCol"}`` of ``df`` for the page: a wnid column beside
    every source-class name column, class names beside wnids in headers and cells."""
    df = df.reset_index(drop=True).copy()
    wnids, first, plain = imagenet_wnids(), None, set(raw_columns)
    for col, name_col in source_class_columns(df):
        wcol = "wnid" if col == "class" else f"{str(col).removesuffix(' class')} wnid"
        if wcol not in df.columns:
            df.insert(df.columns.get_loc(name_col) + 1, wcol, [wnids[int(i)] for i in df[col]])
        plain.update({wcol, name_col})
        first = first or (str(col), str(name_col), wcol)
    columns = [str(c) for c in df.columns]
    kinds = [_kind(df[c]) for c in df.columns]
    rows = [[_cell(v, k, c not in plain) for v, k, c in zip(row, kinds, columns)]
            for row in df.astype(object).itertuples(index=False)]
    pos = [columns.index(c) for c in first] if first else [-1, -1, -1]
    return {"columns": [c if c in plain else with_class_names(c) for c in columns],
            "kinds": kinds, "rows": rows, "classCol": pos[0], "nameCol": pos[1], "wnidCol": pos[2]}


def resolution_notes(name: str, res, results: dict) -> list[str]:
    """Plain-text notes wherever a measure of ``name`` rests on few samples: the analysis's
    registered ``resolution(result, results)``."""
    spec = _spec(name)
    return list(spec.resolution(res, results)) if spec and spec.resolution else []


def model_colours(results: dict, out_dir: Path | None) -> dict[str, str]:
    """One colour per model name, in the order of ``results/index.json`` then of the tables."""
    names: list[str] = []
    index = out_dir / "results" / "index.json" if out_dir else None
    if index is not None and index.exists():
        names += [n for n in json.loads(index.read_text()).get("models", {}) if n != "source"]
    for res in results.values():
        for df in res.tables.values():
            for col in ("model", "model A", "model B"):
                if col in df.columns:
                    names += [str(v) for v in df[col].dropna().unique()]
    keys = [model_key(n) for n in dict.fromkeys(names)]
    keys = [k for k in dict.fromkeys(keys) if k != "source" and "paper 0" not in k]
    return {"source": SOURCE_COLOUR, **{k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}}


def model_key(name: str) -> str:
    """``'fine-tuned + source head (M^st)'`` -> ``'fine-tuned'``; source models -> ``'source'``."""
    name = str(name)
    if name.endswith(" + source head (M^st)"):
        return name.removesuffix(" + source head (M^st)")
    return "source" if name.endswith("(M^s)") else name


class ReportPage:
    """Collects the embedded data of one report page while its sections are written."""

    def __init__(self, results: dict, out_dir: str | Path | None = None,
                 image_budget: int = IMAGE_BUDGET):
        self.results, self.out_dir = results, Path(out_dir) if out_dir else None
        self.blocks: list[str] = []
        self.count, self.image_budget = 0, image_budget
        self.colours = model_colours(results, self.out_dir)
        self.charted: set[tuple[str, str]] = set()

    def head(self, title: str) -> str:
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
                f"<title>{html.escape(title)}</title><style>{asset('report.css')}</style>"
                "</head><body>")

    def table(self, name: str, key: str, df: pd.DataFrame) -> str:
        """A table's placeholder; its rows go once into an embedded JSON block."""
        if key == "gallery":  # drill-down data, embedded by tail(); in the section if titled
            gallery = (_spec(name).gallery if _spec(name) else None) or {}
            if gallery.get("replaces"):
                self.charted.add((name, gallery["replaces"]))
            return f"<div class='ts-gallery' data-analysis='{html.escape(name)}'></div>" \
                if gallery.get("title") and len(df) else ""
        self.count += 1
        tid = f"tbl-{self.count}"
        data = {"analysis": name, "key": key, "file": f"{name}__{key}.csv", **table_data(df)}
        chart = chart_spec(name, key)
        if chart and chart.get("kind") == "heatmap":
            if {chart["rows"], chart["cols"], chart["value"]} <= set(data["columns"]):
                data["chart"] = chart
        elif chart:
            cats = chart["categories"]
            cats = [c for c in data["columns"] if c.startswith(("high ", "slight ", "neutral"))
                    ] if cats == "bins" else [c for c in cats if c in data["columns"]]
            if cats and chart["total"] in data["columns"]:
                data["chart"] = {**chart, "categories": cats}
                self.charted.add((name, chart["replaces"]))
        self.blocks.append(f"<script type='application/json' id='{tid}'>{script_json(data)}"
                           "</script>")
        return (f"<div class='ts-table' data-src='{tid}'><p class='tname'><b>"
                f"{html.escape(key)}</b> <span class='note'>(results/{html.escape(name)}__"
                f"{html.escape(key)}.csv)</span></p></div>")

    def notes(self, name: str, res) -> str:
        texts = [with_class_names(html.escape(n), for_html=True) for n in res.notes]
        out = "".join(f"<p class='note'>{t}</p>" for t in texts)
        return out + "".join(f"<p class='note resolution'>{html.escape(t)}</p>"
                             for t in resolution_notes(name, res, self.results))

    def figures(self, name: str) -> str:
        """The analysis's saved PNG figures, except those replaced by a client-side chart."""
        if self.out_dir is None:
            return ""
        out = []
        for fig in sorted((self.out_dir / "figures").glob(f"{safe_component(name, slug=True)}__*.png")):
            if (name, fig.stem.split("__", 1)[1]) in self.charted:
                continue
            data = base64.b64encode(fig.read_bytes()).decode()
            out.append(f'<img alt="{html.escape(fig.stem)}" src="data:image/png;base64,{data}">')
        return "".join(out)

    def tail(self) -> str:
        """Drill-down panel, embedded data (tables, galleries, thumbnails) and the script."""
        images, used, dropped = {}, 0, 0
        galleries = {}
        for name, res in self.results.items():
            g = res.tables.get("gallery")
            if g is None or not len(g):
                continue
            spec = _spec(name)
            galleries[name] = {**table_data(g, raw_columns=tuple(
                c for c in g.columns if c == "image" or str(c).startswith("cam "))),
                "spec": (spec.gallery if spec else None) or {"widget": "strips"}}
            for key, data in res.images.items():
                b64 = base64.b64encode(data).decode()
                if used + len(b64) > self.image_budget:
                    dropped += 1
                    continue
                images[f"{name}:{key}"] = b64
                used += len(b64)
        meta = {"colours": self.colours, "galleries": galleries, "droppedImages": dropped,
                "panels": drill_panels(self.results), "fewSamples": FEW_SAMPLES,
                "remedy": REMEDY}
        return ("<aside id='drill' hidden aria-live='polite'></aside>" + "".join(self.blocks)
                + f"<script type='application/json' id='ts-meta'>{script_json(meta)}</script>"
                + f"<script type='application/json' id='ts-images'>{script_json(images)}"
                "</script>" + f"<script>{script()}</script>")

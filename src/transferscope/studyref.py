"""The study-file reference, generated from :class:`~transferscope.studies.spec.StudySpec`.

``python -m transferscope.studyref`` writes ``docs/study-file.md``: every key of the study
file (TOML), table by table, with its type, default, allowed range and description (the
``Field(description=...)`` of the spec), a study with every key written out at its default,
and the demo study. ``--check`` exits 1 when the file is not current (tests run it).

Example:
    >>> from transferscope.studies.spec import SourceSpec
    >>> rows = field_rows(SourceSpec)
    >>> [(r.key, r.type, r.default) for r in rows]
    [('arch', 'string', '"efficientnet_lite0"'), ('init', 'string', '"imagenet"')]
    >>> print(toml_value([0.5, 1]), toml_value(True), toml_value("a"))
    [0.5, 1] true "a"
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from transferscope.studies.demo_toml import DEMO_TOML
from transferscope.studies.spec import toml_value
from transferscope.studies.spec import StudySpec

__all__ = ["analysis_options_reference", "DEFAULT_OUT", "field_rows", "full_example", "main",
           "render", "REQUIRED_EXAMPLE", "Row", "tables"]

DEFAULT_OUT = Path("docs") / "study-file.md"
# values for the keys without a default, in the full example
REQUIRED_EXAMPLE = {"target.data": "hymenoptera", "models.name": "fine-tuned",
                    "models.arch": "efficientnet_lite0"}
_CONSTRAINTS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}",
                "min_length": "at least {} item", "max_length": "at most {} item"}
REQUIRED, BELOW = "required", "table below"
_SCALARS = {str: "string", int: "integer", float: "float", bool: "boolean"}


@dataclass
class Row:
    """One key of a table: ``key``, readable ``type``, ``default`` (TOML), ``constraints``,
    ``description``; ``table`` is the nested spec class when the key is itself a table."""

    key: str
    type: str
    default: str
    constraints: str
    description: str
    table: type[BaseModel] | None = None
    array: bool = False  # a list of tables (``[[key]]``)


def _type_name(ann) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        name = " or ".join(_type_name(a) for a in parts)
        return f"{name} (optional)" if len(parts) < len(args) else name
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "tables (one per name)"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "table"
    return _SCALARS.get(ann, getattr(ann, "__name__", str(ann)))


def _nested(ann) -> tuple[type[BaseModel] | None, bool]:
    """The spec class of a table (or list of tables) field."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    if typing.get_origin(ann) is list:
        (arg,) = typing.get_args(ann)
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, True
    return None, False


def _constraints(info: FieldInfo) -> str:
    out = []
    for meta in info.metadata:
        for attr, fmt in _CONSTRAINTS.items():
            if getattr(meta, attr, None) is not None:
                n = getattr(meta, attr)
                out.append(fmt.format(n) + ("s" if attr.endswith("length") and n != 1 else ""))
    return ", ".join(out)


def field_rows(spec: type[BaseModel]) -> list[Row]:
    """The keys of one table, in declaration order."""
    rows = []
    for key, info in spec.model_fields.items():
        table, array = _nested(info.annotation)
        if info.is_required():
            default = REQUIRED
        elif table is not None:
            default = BELOW
        else:
            default = toml_value(info.get_default(call_default_factory=True))
        type_name = ("list of tables" if array else "table") if table else \
            _type_name(info.annotation)
        rows.append(Row(key, type_name, default, _constraints(info), info.description or "",
                        table, array))
    return rows


def tables(spec: type[BaseModel] = StudySpec, prefix: str = ""
           ) -> list[tuple[str, type[BaseModel], bool]]:
    """``(dotted name, spec class, is array)`` of every table, depth first; the top level
    is ``""``."""
    out = [(prefix, spec, False)]
    for row in field_rows(spec):
        if row.table is not None:
            name = f"{prefix}.{row.key}" if prefix else row.key
            sub = tables(row.table, name)
            out.append((name, row.table, row.array))
            out.extend(sub[1:])
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def full_example() -> str:
    """A study file with every key written out: defaults, and :data:`REQUIRED_EXAMPLE` for the
    keys without one; unset optional keys are commented out."""
    lines = ["# every key at its default (required keys: an example value)"]
    for name, spec, array in tables():
        if name:
            lines += ["", f"[[{name}]]" if array else f"[{name}]"]
        for row in field_rows(spec):
            if row.table is not None:
                continue
            example = REQUIRED_EXAMPLE.get(f"{name}.{row.key}" if name else row.key)
            if example is not None:
                lines.append(f"{row.key} = {toml_value(example)}")
            elif row.default == "(unset)":
                lines.append(f"# {row.key} = ...  (unset by default; {row.type})")
            else:
                lines.append(f"{row.key} = {row.default}")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole reference as Markdown."""
    out = ["# Study file reference", "",
           "<!-- generated by `python -m transferscope.studyref` from "
           "src/transferscope/studies/spec.py; do not edit -->", "",
           "A study file is TOML. Unknown keys are errors; every error names the file and the key. "
           "`transferscope demo --print-spec` prints the demo study (at the end of this page); "
           "`transferscope audit STUDY.toml --out DIR` runs a study.", ""]
    for name, spec, array in tables():
        title = "Top-level keys" if not name else f"`[[{name}]]`" if array else f"`[{name}]`"
        out += [f"## {title}", "", _doc(spec), "",
                "| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        for row in field_rows(spec):
            default = f"`{_cell(row.default)}`" if row.default not in (REQUIRED, BELOW) else \
                f"**{row.default}**" if row.default == REQUIRED else row.default
            out.append(f"| `{row.key}` | {_cell(row.type)} | {default} | "
                       f"{_cell(row.constraints)} | {_cell(row.description)} |")
        out.append("")
    out += analysis_options_reference()
    out += ["## Every key", "", "```toml", full_example().rstrip(), "```", "",
            "## Example: the demo study", "", "```toml", DEMO_TOML.rstrip(), "```", ""]
    return "\n".join(out)


def analysis_options_reference() -> list[str]:
    """``[analyses.options.<name>]``: every runnable analysis's options, read from its options
    model - the only place its defaults live."""
    from transferscope.analyses import get_analysis, list_analyses

    out = ["## `[analyses.options.<name>]`", "",
           "Each analysis's options (its pydantic options model, the one home of its defaults; "
           "Python: `run_analysis(name, ctx, {...})`). A study sets them per analysis, e.g. "
           "`[analyses.options.distraction]` then `per_class = 20`.", ""]
    for name in list_analyses(runnable=True):
        spec = get_analysis(name)
        if not getattr(spec.run, "__module__", "").startswith("transferscope.analyses."):
            continue  # built-in analyses only (a plug-in or a test's toy is not documented)
        rows = []
        for key, info in spec.options.model_fields.items():
            try:
                default = REQUIRED if info.is_required() else toml_value(
                    info.get_default(call_default_factory=True))
            except TypeError:
                default = str(info.get_default(call_default_factory=True))
            rows.append(f"| `{key}` | {_cell(_type_name(info.annotation))} | `{_cell(default)}`"
                        f" | {_cell(_constraints(info))} | {_cell(info.description or '')} |")
        out += [f"### `{name}` ({_cell(spec.paper)})", ""]
        out += (["| option | type | default | allowed | description |", "|---|---|---|---|---|",
                 *rows] if rows else ["No options."]) + [""]
    return out


def _doc(spec: type[BaseModel]) -> str:
    return " ".join((spec.__doc__ or "").split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transferscope.studyref",
                                     description="Write the study-file reference.")
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT,
                        help=f"Markdown file to write (default: {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the file differs from the code")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else None
        if current != text:
            print(f"{args.out} is not current; run `python -m transferscope.studyref`",
                  file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Docs that run: ``python -m pytest`` collects the doctests of src/, and the study-file
reference in docs/ is generated from the code."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "transferscope"


def test_pytest_config_collects_src_doctests():
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in opts["addopts"].split()
    assert "src/transferscope" in opts["testpaths"] and "tests" in opts["testpaths"]
    # the examples exist where the issue counted them (>= 50 lines of ``>>>``)
    lines = sum(len(re.findall(r"^\s*>>> ", f.read_text(), re.M)) for f in SRC.rglob("*.py"))
    assert lines >= 50


# --- the study-file reference (docs/study-file.md) ---------------------------------------------

def test_committed_study_file_reference_is_current():
    from transferscope import studyref

    assert (ROOT / "docs" / "study-file.md").read_text() == studyref.render(), \
        "docs/study-file.md is stale: run `python -m transferscope.studyref`"


def test_every_study_key_is_described_and_listed():
    from transferscope import studyref

    text = studyref.render()
    found = studyref.tables()
    assert [n for n, _, _ in found] == ["", "source", "target", "source_images", "models",
                                       "analyses", "analyses.composites",
                                       "analyses.transfer_options"]
    n_keys = 0
    for name, spec, array in found:
        assert (spec.__doc__ or "").strip(), f"{spec.__name__} has no docstring"
        title = "## Top-level keys" if not name else f"## `[[{name}]]`" if array \
            else f"## `[{name}]`"
        section = text.split(title + "\n", 1)[1].split("\n## ", 1)[0]
        for key, info in spec.model_fields.items():
            n_keys += 1
            assert info.description and len(info.description) > 10, f"{name}.{key}"
            assert f"| `{key}` |" in section and info.description in section, f"{name}.{key}"
    assert n_keys >= 39  # the 39 keys of the spec when the reference was written


def test_every_key_example_parses_to_the_defaults():
    """The generated "every key" study names each key once and, parsed, equals the spec built
    from the required keys alone: the documented defaults are the real ones."""
    from transferscope import studyref
    from transferscope.studies.spec import StudySpec, parse_study

    full = studyref.full_example()
    spec = parse_study(full, "every-key example")
    minimal = StudySpec(target={"data": "hymenoptera"},
                        models=[{"name": "fine-tuned", "arch": "efficientnet_lite0"}])
    assert spec.model_dump() == minimal.model_dump()
    keys = re.findall(r"^#? ?(\w+) = ", full, re.M)
    expected = [k for _, spec_cls, _ in studyref.tables()
                for k, row in zip(spec_cls.model_fields, studyref.field_rows(spec_cls))
                if row.table is None]
    assert keys == expected and len(keys) >= 32
    assert "# limit = ...  (unset by default; integer (optional))" in full


def test_reference_rows_known_answer():
    from typing import Literal

    from pydantic import BaseModel, Field

    from transferscope import studyref

    class Inner(BaseModel):
        """Inner table."""
        k: Literal["a", "b"] = Field("a", description="a letter")

    class Toy(BaseModel):
        """Toy table."""
        xs: list[float] = Field(default_factory=lambda: [0.5, 2.0], min_length=2,
                                description="numbers")
        n: int | None = Field(None, ge=1, le=32, description="count")
        flag: bool = Field(True, description="switch")
        inner: Inner = Field(default_factory=Inner, description="nested")
        items: list[Inner] = Field(description="tables")

    rows = {r.key: r for r in studyref.field_rows(Toy)}
    assert (rows["xs"].type, rows["xs"].default, rows["xs"].constraints) == \
        ("list of float", "[0.5, 2.0]", "at least 2 items")
    assert (rows["n"].type, rows["n"].default, rows["n"].constraints) == \
        ("integer (optional)", "(unset)", ">= 1, <= 32")
    assert (rows["flag"].type, rows["flag"].default) == ("boolean", "true")
    assert (rows["inner"].type, rows["inner"].table, rows["inner"].array) == ("table", Inner,
                                                                              False)
    assert (rows["items"].type, rows["items"].default, rows["items"].array) == \
        ("list of tables", "required", True)
    assert studyref.field_rows(Inner)[0].type == '"a" or "b"'
    assert [(n, s) for n, s, _ in studyref.tables(Toy)] == [("", Toy), ("inner", Inner),
                                                             ("items", Inner)]


def test_check_mode_reports_a_stale_reference(tmp_path, capsys):
    from transferscope import studyref

    out = tmp_path / "ref.md"
    assert studyref.main(["--check", str(out)]) == 1  # missing
    assert studyref.main([str(out)]) == 0 and out.read_text() == studyref.render()
    assert studyref.main(["--check", str(out)]) == 0
    out.write_text(out.read_text().replace("title of the report", "old words"))
    assert studyref.main(["--check", str(out)]) == 1
    assert "not current" in capsys.readouterr().err


# --- the README's Python section runs -----------------------------------------------------------

def readme_python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block of a Markdown text."""
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)]


def test_readme_python_section_runs(tmp_path, monkeypatch):
    """Every ```python block of the README runs: ``>>>`` blocks as doctests (outputs checked,
    ``...`` matches anything), the others as scripts. They run in a folder holding what the
    README's shell steps would have left there - a run directory ``runs/ft`` and an audit folder
    ``audit-ft`` (synthetic results: no training, no download) - with an empty data root."""
    import doctest

    from _report_synthetic import synthetic_results
    from transferscope import create_model
    from transferscope.models import save_model

    (tmp_path / "runs" / "ft").mkdir(parents=True)
    save_model(create_model("baseline_cnn", 2, init="random"),
               tmp_path / "runs" / "ft" / "model.safetensors")
    synthetic_results(tmp_path / "audit-ft")
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("TRANSFERSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)

    readme = ROOT / "README.md"
    blocks = readme_python_blocks(readme.read_text())
    assert blocks, "the README has no ```python block"
    assert any(">>> " in code for _, code in blocks)
    for lineno, code in blocks:
        if ">>> " not in code:
            exec(compile(code, f"{readme}:{lineno}", "exec"), {"__name__": "readme"})
            continue
        test = doctest.DocTestParser().get_doctest(code, {"__name__": "readme"}, "README",
                                                   str(readme), lineno - 1)
        out: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        result = runner.run(test, out=out.append)
        assert result.attempted > 5 and result.failed == 0, "".join(out)


def test_readme_block_extraction_known_answer():
    text = "x\n```python\na = 1\n```\n\n```bash\nb\n```\n```python\n>>> 1\n1\n```\n"
    assert readme_python_blocks(text) == [(3, "a = 1\n"), (10, ">>> 1\n1\n")]

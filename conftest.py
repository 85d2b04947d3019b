"""Doctests of ``src/transferscope`` run with ``python -m pytest`` (pyproject.toml:
``--doctest-modules``, testpaths ``tests`` and ``src/transferscope``).

Each doctest gets an empty cache folder and an empty data root (examples must not need the data
sets or the network). A module whose module-level imports are not installed (an optional extra
such as a tracker) is left out of the doctests and named in the session header, so a plain
``pip install -e ".[test]"`` still collects.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent / "src" / "transferscope"


def _module_level_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def _missing_optional() -> dict[str, list[str]]:
    """``{file: [missing top-level modules]}`` for src files that import uninstalled packages
    at module level (those would fail doctest collection)."""
    skip = set(sys.stdlib_module_names) | {"__future__", "transferscope"}
    out = {}
    for f in sorted(SRC.rglob("*.py")):
        try:
            mods = _module_level_imports(ast.parse(f.read_text()))
        except SyntaxError:  # reported by the collection itself
            continue
        missing = sorted(m for m in mods - skip if importlib.util.find_spec(m) is None)
        if missing:
            out[str(f)] = missing
    return out


MISSING = _missing_optional()
collect_ignore = list(MISSING)


def pytest_report_header(config):
    if MISSING:
        return ["doctests left out (package not installed): " + "; ".join(
            f"{Path(f).relative_to(SRC.parent)} needs {', '.join(m)}"
            for f, m in MISSING.items())]
    return None


@pytest.fixture(autouse=True)
def _isolated_doctest(request, tmp_path_factory, monkeypatch):
    """Doctests: an empty cache and data root, no progress bars (tests/conftest.py isolates the
    tests the same way)."""
    from _pytest.doctest import DoctestItem

    if isinstance(request.node, DoctestItem):
        monkeypatch.setenv("TRANSFERSCOPE_CACHE", str(tmp_path_factory.mktemp("doctest-cache")))
        monkeypatch.setenv("TRANSFERSCOPE_DATA", str(tmp_path_factory.mktemp("no-data-root")))
        monkeypatch.setenv("TRANSFERSCOPE_PROGRESS", "0")
        import transferscope.engine.inference as inf

        monkeypatch.setattr(inf, "_default_cache", None)
    yield

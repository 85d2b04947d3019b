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

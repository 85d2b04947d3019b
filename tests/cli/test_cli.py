"""The installed ``transferscope`` command: usage errors print the usage message and exit 2."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import transferscope

SRC = Path(transferscope.__file__).resolve().parents[1]


def _console_script() -> str:
    """The ``transferscope`` console script installed next to this interpreter (or on PATH)."""
    here = Path(sys.executable).parent / ("transferscope.exe" if os.name == "nt" else "transferscope")
    found = str(here) if here.is_file() else shutil.which("transferscope")
    if not found:
        pytest.skip("the transferscope console script is not installed (pip install -e .)")
    return found


def _typer_needs_click() -> bool:
    reqs = metadata.requires("typer") or []
    return any(r.split(";")[0].strip().lower().startswith("click") for r in reqs
               if "extra ==" not in r)


@pytest.fixture
def fresh_env(tmp_path):
    """Environment of a fresh install: this checkout's sources first and, unless typer itself
    depends on click, no importable ``click`` (typer vendors it; the venv may still have it)."""
    paths = [str(SRC)]
    if not _typer_needs_click():
        block = tmp_path / "noclick" / "click"
        block.mkdir(parents=True)
        (block / "__init__.py").write_text(
            "raise ModuleNotFoundError(\"No module named 'click'\", name='click')\n")
        paths.insert(0, str(block.parent))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]),
               COLUMNS="100", NO_COLOR="1", TERM="dumb")
    return env


@pytest.mark.parametrize("args, says", [
    (["train", "--bogus"], "--bogus"),                      # unknown option
    (["evaluate"], "--model"),                              # missing required options
    (["evaluate", "--model", "x"], "--data"),               # one of two missing
    (["audit"], "STUDY"),                                   # missing argument
    (["bogus-command"], "bogus-command"),                   # unknown command
    (["trian"], "train"),                                   # typo: suggests the command
    (["data", "fetch"], "NAME"),                            # nested group, missing argument
    (["train", "--arch", "baseline_cnn", "--data", "d", "--out", "o", "--seed", "x"], "--seed"),
])
def test_usage_errors_print_usage_and_exit_2(fresh_env, args, says):
    done = subprocess.run([_console_script(), *args], env=fresh_env, capture_output=True,
                          text=True, timeout=120)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "Usage" in text and says.lower() in text.lower(), text
    assert "Traceback" not in text and "click" not in text.lower(), text


def test_help_and_version_exit_0(fresh_env):
    script = _console_script()
    done = subprocess.run([script, "train", "--help"], env=fresh_env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--arch" in done.stdout, done.stdout + done.stderr
    done = subprocess.run([script, "version"], env=fresh_env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == transferscope.__version__


def test_main_returns_2_for_usage_and_user_errors(tmp_path, capsys):
    from transferscope.cli import main

    assert main(["train", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "Usage" in err and "--bogus" in err
    assert main(["evaluate", "--model", "resnet9000", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and len(err.strip().splitlines()) == 1
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == transferscope.__version__


# --- the cli package: no import cycle ---------------------------------------------------------

CLI_DIR = SRC / "transferscope" / "cli"
CLI_MODULES = sorted(
    "transferscope.cli" + ("" if f.stem == "__init__" else f".{f.stem}")
    for f in CLI_DIR.glob("*.py"))


def _module_level_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """transferscope modules that ``path`` imports at module level (function bodies excluded)."""
    tree = ast.parse(path.read_text())
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes):
        for n in nodes:
            if isinstance(n, ast.Import):
                found.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - n.level + 1]
                    base = ".".join(parts + ([n.module] if n.module else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in n.names if f"{base}.{a.name}" in known)
            elif isinstance(n, (ast.If, ast.Try)):  # module-level conditional imports count
                visit(n.body)
                visit(getattr(n, "orelse", []))
                for h in getattr(n, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                dfs(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            dfs(u)
    return cycles


def test_import_graph_helper_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pk"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pk import a\n")
    (pkg / "a.py").write_text("from pk import b\ndef f():\n    import pk\n")
    (pkg / "b.py").write_text("if True:\n    from . import a as _a\n")
    known = {"pk", "pk.a", "pk.b"}
    graph = {"pk": _module_level_imports(pkg / "__init__.py", "pk", known),
             "pk.a": _module_level_imports(pkg / "a.py", "pk.a", known),
             "pk.b": _module_level_imports(pkg / "b.py", "pk.b", known)}
    assert graph == {"pk": {"pk.a"}, "pk.a": {"pk", "pk.b"}, "pk.b": {"pk", "pk.a"}}
    assert _cycles(graph)  # pk -> pk.a -> pk (and pk.a <-> pk.b)
    assert not _cycles({"pk": {"pk.a"}, "pk.a": {"pk.b"}, "pk.b": set()})


def test_cli_package_has_no_import_cycle():
    assert len(CLI_MODULES) >= 4 and not (SRC / "transferscope" / "cli.py").exists()
    files = {m: CLI_DIR / ("__init__.py" if m == "transferscope.cli"
                           else m.rpartition(".")[2] + ".py") for m in CLI_MODULES}
    known = set(CLI_MODULES)
    graph = {m: _module_level_imports(f, m, known) for m, f in files.items()}
    assert not _cycles(graph), graph
    for m, f in files.items():  # small files: one concern each
        assert len(f.read_text().splitlines()) < 400, f"{f} has 400 lines or more"
    # only the package __init__ imports the command modules; they import the app from _app
    for m in CLI_MODULES:
        if m not in ("transferscope.cli", "transferscope.cli.__main__"):
            assert "transferscope.cli" not in graph[m], f"{m} imports its own package"


@pytest.mark.parametrize("module", CLI_MODULES)
def test_each_cli_module_imports_first_in_a_fresh_interpreter(module):
    code = ("import importlib, typer; importlib.import_module(%r); "
            "from transferscope.cli import app; "
            "print(sorted(typer.main.get_command(app).commands))" % module)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    names = ast.literal_eval(done.stdout)
    for cmd in ("train", "evaluate", "audit", "audit-memory", "demo", "guard", "models",
                "recipes", "data", "version", "transferability", "block-shuffle",
                "checkpoint-transfer", "remedies", "cache", "rank"):
        assert cmd in names, (module, names)

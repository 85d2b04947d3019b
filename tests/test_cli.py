"""The installed ``transferscope`` command: usage errors print the usage message and exit 2."""

from __future__ import annotations

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

"""The ``transferscope`` command line.

Usage errors print the usage message and exit with status 2; user errors
(:class:`~transferscope.errors.TransferscopeError`) print one line and exit with status 2.

Layout: :mod:`._app` holds the typer app and shared options, :mod:`.commands` the core
commands, :mod:`.studies` the study commands (papers 002/003, remedies). Importing this package
registers every command; ``run`` is the console-script target (``transferscope.cli:run``).
"""

from __future__ import annotations

import signal
import sys

import typer

from transferscope.cli import commands as _commands  # noqa: F401  (registers the commands)
from transferscope.cli import audits as _audits  # noqa: F401  (audit-memory, guard)
from transferscope.cli import studies as _studies  # noqa: F401  (registers the study commands)
from transferscope.cli import cache as _cache  # noqa: F401  (registers `cache info|clear`)
from transferscope.cli import rank as _rank  # noqa: F401  (registers `rank`)
from transferscope.cli import check as _check  # noqa: F401  (registers `check`)
from transferscope.cli._app import app
from pydantic import ValidationError

from transferscope.errors import TransferscopeError, validation_line

__all__ = ["app", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status.

    Usage errors (unknown command or option, missing option) print typer's usage message and
    return 2; user errors (:class:`TransferscopeError`) print one line and return 2; Ctrl-C
    returns 130, SIGTERM (under :func:`run`) 143. Typer handles the usage errors itself
    (standalone mode), so the CLI needs no import of click, which typer vendors and no longer
    installs.

    >>> main(["trian"])  # prints "Usage: ... No such command 'trian'. Did you mean 'train'?"
    2
    """
    try:
        app(args=argv, prog_name="transferscope")  # standalone: always ends in SystemExit
        code: object = 0
    except SystemExit as exc:  # typer: 0 on success, 2 on usage errors, 130 on Ctrl-C, 1 abort
        code = exc.code
    except TransferscopeError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except ValidationError as exc:  # a setting checked by a pydantic model: one line
        typer.echo(f"error: {validation_line(exc)}", err=True)
        return 2
    except KeyboardInterrupt:
        code = 130
    if code == 130:
        code = 143 if _terminated else 130
        typer.echo("interrupted; run the same command again to continue where it stopped "
                   "(train: with --resume)", err=True)
    if code is None:
        return 0
    if not isinstance(code, int):  # sys.exit("message") prints the message, status 1
        typer.echo(str(code), err=True)
        return 1
    return code


_terminated = False


def _on_sigterm(_signum, _frame) -> None:
    """SIGTERM (``kill``, Slurm preempting a job, a container stopping) ends the command as
    Ctrl-C does: a forward pass saves the batches it computed, locks are released."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def run() -> None:
    """Console-script target: ``sys.exit(main())``, SIGTERM handled as Ctrl-C."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.exit(main())

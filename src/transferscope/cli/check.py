"""``transferscope check``: a finished study's findings against thresholds (a CI gate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from transferscope.cli._app import DataRoot, app
from transferscope.errors import ConfigError

__all__ = ["check"]


@app.command()
def check(out: Path = typer.Argument(..., help="a finished study's output folder (audit, "
                                     "audit-memory or demo --out)"),
          rules: Optional[Path] = typer.Option(None, help="TOML file with a [check] table "
                                               "(default: OUT/study.toml's)"),
          rule: Optional[List[str]] = typer.Option(None, help="a rule on the command line, "
                                                   "repeatable: ANALYSIS.KEY>=X, "
                                                   "ANALYSIS:number:GLOB>=X, "
                                                   "ANALYSIS:estimate[.lo|.hi]:GLOB<=X or "
                                                   "claim:KEY!=VERDICT"),
          junit: Optional[Path] = typer.Option(None, help="also write JUnit XML here"),
          json_out: Optional[Path] = typer.Option(None, "--json", help="also write a JSON "
                                                  "summary here"),
          run: Optional[Path] = typer.Option(None, help="run this study file into OUT first "
                                             "(its [check] table is the default rules)"),
          data_root: Optional[Path] = DataRoot):
    """Check a study's findings against thresholds: one line per check; exit 0 when all pass,
    1 when one fails, 2 when a rule cannot be evaluated (docs/ci-gate.md)."""
    from transferscope.studies.check import check as run_check
    from transferscope.studies.check import parse_rule, read_rules

    chosen = (read_rules(rules) if rules else []) + [parse_rule(r) for r in rule or []]
    if run is not None:
        from transferscope.studies.run import load_any, run_file

        load_any(run)  # the study and its [check] table checked before anything runs
        chosen = chosen or read_rules(run)
        if not chosen:
            raise ConfigError(f"{run}: no [check] table; add one or give --rules FILE / --rule "
                              "(nothing was run)")
        run_file(run, out, data_root=data_root)
    result = run_check(out, chosen or None)
    for line in result.lines():
        typer.echo(line)
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(result.to_junit())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=1))
    typer.echo(result.tally())
    raise typer.Exit(result.exit_code)

"""``transferscope cache info|clear``: the cache directory's size per kind, and clearing it
by age or to a size cap (least recently used first)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Optional

import typer

from transferscope.cli._app import app

__all__ = ["cache_app", "cache_clear", "cache_info", "CacheDir"]

cache_app = typer.Typer(no_args_is_help=True, help="Inspect and clear the result cache.")
app.add_typer(cache_app, name="cache")

CacheDir = typer.Option(None, "--cache-dir", help="cache folder (else $TRANSFERSCOPE_CACHE, "
                        "else ~/.cache/transferscope/cache)")


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


@cache_app.command("info")
def cache_info(cache_dir: Optional[Path] = CacheDir,
               json_out: bool = typer.Option(False, "--json", help="print JSON")):
    """Size and entries of the cache, per kind (predict, features, gradcam, analysis, ...)."""
    from transferscope.engine.cache_admin import human, info

    res = info(cache_dir)
    if json_out:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(f"{res['root']}: {human(res['bytes'])} in {res['entries']} entries")
    for kind, k in res["kinds"].items():
        typer.echo(f"  {kind:13s} {k['entries']:6d} entries {human(k['bytes']):>10s}   "
                   f"last used {_when(k['last_used'])}")


@cache_app.command("clear")
def cache_clear(cache_dir: Optional[Path] = CacheDir,
                older_than: Optional[str] = typer.Option(None, help="remove entries unused "
                                                         "for this long, e.g. 30d, 12h"),
                max_size: Optional[str] = typer.Option(None, help="then evict the least "
                                                       "recently used down to this, e.g. 2GB"),
                dry_run: bool = typer.Option(False, help="only say what would be removed")):
    """Remove cache entries: all of them, or by --older-than and/or --max-size."""
    from transferscope.engine.cache_admin import clear, human, parse_age, parse_size

    res = clear(cache_dir, older_than=parse_age(older_than) if older_than else None,
                max_size=parse_size(max_size) if max_size is not None else None,
                dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {res['removed']} entries ({human(res['bytes_removed'])}); "
               f"{human(res['bytes_left'])} {'would remain' if dry_run else 'left'}")

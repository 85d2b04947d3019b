"""The typer application of the ``transferscope`` CLI and the options its commands share.

Command modules (:mod:`transferscope.cli.commands`, :mod:`transferscope.cli.studies`) import
``app`` from here and register on it; this module imports no command module, so there is no
import cycle.
"""

from __future__ import annotations

import typer

from transferscope import config
from transferscope.studies.spec import with_executor  # noqa: F401 (used by the commands)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Audit what transfer learning keeps, transfers and breaks.")
data_app = typer.Typer(no_args_is_help=True, help="Find, check and download data sets.")
app.add_typer(data_app, name="data")

DATA_HELP = ("data set: a name under the data root, a folder (ImageFolder layout) or a CSV file "
             "path,label[,split]")
SPLIT_DATA_HELP = ("with train and val splits: a name under the data root, a folder "
                   "(ImageFolder layout) or a CSV file path,label,split")
DataRoot = typer.Option(None, "--data-root", help=f"data folder (else ${config.DATA_ENV}, "
                        "else ../shared/data, else ~/.cache/transferscope/data)")
LogTo = typer.Option(None, "--log-to", help="also log metrics, figures and the report to "
                     "tensorboard (<out>/tensorboard) or mlflow (<out>/mlflow.db, or "
                     "$MLFLOW_TRACKING_URI)")
Executor = typer.Option(None, "--executor", help="where training runs execute: local (one "
                        "after another here) or ray (Ray tasks; RAY_ADDRESS picks the cluster); "
                        "default: the study's `executor`, else local")


from transferscope.studies.audit_memory import load_any_model  # noqa: E402,F401 (one home)

__all__ = ["app", "data_app", "DATA_HELP", "DataRoot", "Executor", "LogTo", "SPLIT_DATA_HELP"]

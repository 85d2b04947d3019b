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



def load_any_model(model: str, init: str, num_classes: int | None):
    """A model from a run directory, a transferscope ``.safetensors`` file or a name."""
    from pathlib import Path

    from transferscope.errors import TransferscopeError

    from transferscope.engine import load_run
    from transferscope.models import create_model, load_model

    path = Path(model)
    if path.is_dir():
        return load_run(path)
    if not path.exists() and (model.endswith((".safetensors", ".pt", ".pth")) or (
            "/" in model and ":" not in model.split("/")[0])):
        raise TransferscopeError(f"{model}: no such run directory or model file; give a "
                                 "finished run directory (train writes one) or a .safetensors "
                                 "file, or a registered architecture (`transferscope models`)")
    if path.suffix == ".safetensors" and path.is_file():
        return load_model(path)
    if path.is_file():
        raise TransferscopeError(f"{model}: give a .safetensors model saved by transferscope or a "
                                 "run directory; for a plain checkpoint name its architecture "
                                 f"and pass the file as weights: --model ARCH --init {model}")
    return create_model(model, num_classes, init=init)

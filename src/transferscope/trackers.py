"""Logging to the experiment trackers people already run: TensorBoard and MLflow (optional
extras ``transferscope[tensorboard]`` / ``transferscope[mlflow]``).

``--log-to tensorboard|mlflow`` (``log_to=`` in :class:`~transferscope.studies.run.Study.run` and
in a study file) logs each model's per-epoch training metrics (``train/<model>/<metric>``,
step = epoch), every analysis's summary numbers (``<analysis>/<path in its summary>``), its
figures, and the report as an artifact.

Stores (local, no server): TensorBoard event files in ``<out>/tensorboard``; for MLflow a
SQLite store ``sqlite:///<out>/mlflow.db`` with artifacts in ``<out>/mlartifacts`` (MLflow 3
keeps its ``file:`` store in maintenance and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``;
``$MLFLOW_TRACKING_URI`` or ``uri=`` choose another store, ``file:`` included), experiment
``transferscope``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator

from transferscope._paths import safe_component
from transferscope.errors import ConfigError

__all__ = ["flatten_numbers", "flatten_params", "KINDS", "MLflowTracker", "open_tracker",
           "TensorBoardTracker", "Tracker"]

KINDS = ("tensorboard", "mlflow")


def flatten_numbers(obj: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """The finite numbers of a nested summary, keyed by their path.

    >>> dict(flatten_numbers({"a": {"x": 1, "y": float("nan")}, "b": [0.5, "s"], "c": True}))
    {'a/x': 1.0, 'b/0': 0.5}
    """
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten_numbers(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten_numbers(v, f"{prefix}/{i}" if prefix else str(i))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        yield prefix, float(obj)


class Tracker:
    """The interface: parameters once, metrics per step, figures and files as artifacts."""

    kind = "none"

    def log_params(self, params: dict) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        raise NotImplementedError

    def log_figure(self, name: str, png: Path) -> None:
        raise NotImplementedError

    def log_artifact(self, path: Path, folder: str = "") -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def epoch_logger(self, model: str):
        """A ``train(..., on_epoch=)`` callback logging ``train/<model>/<metric>`` per epoch."""
        def on_epoch(row: dict) -> None:
            self.log_metrics({f"train/{model}/{k}": v for k, v in row.items() if k != "epoch"},
                             step=int(row["epoch"]))
        return on_epoch

    def log_results(self, out: Path, results: dict, report: Path | None = None) -> None:
        """Every analysis's summary numbers, its figures (``out/figures/<name>__*.png``) and
        the report."""
        for name, res in results.items():
            self.log_metrics({f"{name}/{k}": v for k, v in flatten_numbers(res.summary)})
            for png in sorted((Path(out) / "figures").glob(f"{safe_component(name, slug=True)}__*.png")):
                self.log_figure(png.stem, png)
        if report is not None and Path(report).is_file():
            self.log_artifact(Path(report))


class TensorBoardTracker(Tracker):
    """Event files via ``torch.utils.tensorboard.SummaryWriter``; params and the report's
    path as text (TensorBoard keeps no files), figures as images."""

    kind = "tensorboard"

    def __init__(self, log_dir: Path, run_name: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # tensorboard missing
            raise ConfigError("--log-to tensorboard needs the tensorboard package: pip "
                              "install 'transferscope[tensorboard]'") from exc
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("run", run_name, 0)

    def log_params(self, params: dict) -> None:
        self.writer.add_text("params", "```\n" + json.dumps(params, indent=2, default=str)
                             + "\n```", 0)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, float(v), step)

    def log_figure(self, name: str, png: Path) -> None:
        import numpy as np
        from PIL import Image

        img = np.asarray(Image.open(png).convert("RGB"))
        self.writer.add_image(f"figures/{name}", img, 0, dataformats="HWC")

    def log_artifact(self, path: Path, folder: str = "") -> None:
        self.writer.add_text(f"artifacts/{folder or Path(path).name}", str(Path(path).resolve()), 0)

    def close(self) -> None:
        self.writer.close()


_MLFLOW_BAD = re.compile(r"[^0-9A-Za-z_\-. :/]")


class MLflowTracker(Tracker):
    """An MLflow run (``MlflowClient``): params, metrics with steps, figures and the report
    as artifacts. Metric names keep MLflow's characters (others become ``_``)."""

    kind = "mlflow"

    def __init__(self, uri: str, run_name: str, experiment: str = "transferscope",
                 artifact_location: str | None = None):
        try:
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError("--log-to mlflow needs the mlflow package: pip install "
                              "'transferscope[mlflow]'") from exc
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=artifact_location)
            self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except MlflowException as exc:
            raise ConfigError(f"MLflow store {uri}: {str(exc).splitlines()[0][:300]}") from exc

    @staticmethod
    def key(name: str) -> str:
        """An MLflow-safe metric name: its characters only, no empty, '.' or '..' parts.

        >>> MLflowTracker.key("cka//tmp/a b/P-T #1 & P/../x")
        'cka/tmp/a b/P-T _1 _ P/x'
        """
        parts = [p for p in _MLFLOW_BAD.sub("_", name).split("/") if p not in ("", ".", "..")]
        return "/".join(parts)[:250]

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(self.key(k), str(v)[:6000]) for k, v in
                 flatten_params(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(self.key(k), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_figure(self, name: str, png: Path) -> None:
        self.client.log_artifact(self.run_id, str(png), "figures")

    def log_artifact(self, path: Path, folder: str = "") -> None:
        self.client.log_artifact(self.run_id, str(path), folder or None)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def flatten_params(params: dict, prefix: str = "") -> dict[str, Any]:
    """``{"recipe": {"lr": 0.1}}`` -> ``{"recipe.lr": 0.1}``.

    >>> flatten_params({"arch": "cnn", "recipe": {"lr": 0.1, "epochs": 3}})
    {'arch': 'cnn', 'recipe.lr': 0.1, 'recipe.epochs': 3}
    """
    flat: dict[str, Any] = {}
    for k, v in params.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            flat.update(flatten_params(v, key))
        else:
            flat[key] = v
    return flat


def open_tracker(kind: str | None, out: str | os.PathLike, run_name: str,
                 uri: str | None = None) -> Tracker | None:
    """``None`` for no tracking, else a tracker writing next to ``out`` (see module doc)."""
    if not kind:
        return None
    out = Path(out)
    if kind == "tensorboard":
        return TensorBoardTracker(uri or out / "tensorboard", run_name)
    if kind == "mlflow":
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            return MLflowTracker(uri, run_name)
        out.mkdir(parents=True, exist_ok=True)
        return MLflowTracker(f"sqlite:///{(out / 'mlflow.db').resolve()}", run_name,
                             artifact_location=(out / "mlartifacts").resolve().as_uri())
    raise ConfigError(f"--log-to {kind!r}: use one of {', '.join(KINDS)}")

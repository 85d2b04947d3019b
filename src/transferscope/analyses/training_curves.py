"""During training: the monitor's metrics per epoch (``monitor.jsonl``, written by
:class:`transferscope.callbacks.AuditMonitor` and the Lightning / Hugging Face callbacks), a
curve per metric and the epoch at which each threshold was first crossed.

This module owns the file format (one JSON object per evaluation: ``epoch``, ``step``,
``metrics`` {key: value}, ``intervals`` {key: Interval dict}, ``skipped``, ``seconds``), so the
report reads what the callbacks write without importing them.
"""

from __future__ import annotations

import json
import math
import operator
import re
from pathlib import Path

import pandas as pd
from pydantic import Field

from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._registry import AnalysisOptions, Finding, register_analysis
from transferscope.errors import ConfigError, DataError

__all__ = ["crossings", "curves_table", "finding", "MONITOR_FILE", "PANELS", "parse_threshold",
           "read_monitor", "run", "SUMMARY_FILE", "TrainingCurvesOptions"]

MONITOR_FILE = "monitor.jsonl"
SUMMARY_FILE = "monitor_summary.json"
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_RULE = re.compile(r"^\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


def parse_threshold(rule: str, key: str = "threshold") -> tuple[str, float]:
    """``"< 50"`` -> ``("<", 50.0)``; one clear line for anything else.

    Example:
        >>> parse_threshold(">= 0.9")
        ('>=', 0.9)
    """
    m = _RULE.match(str(rule))
    try:
        return m.group(1), float(m.group(2))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise ConfigError(f"{key}: threshold {rule!r} is not '<', '<=', '>' or '>=' and a "
                          "number, e.g. '< 50'") from None


def crossings(history: list[dict], thresholds: dict[str, str]) -> list[dict]:
    """For each ``key -> rule``: the first evaluation (epoch, step) at which the metric met
    the rule, or None when it never did (or was never measured).

    Example:
        >>> h = [{"epoch": e, "step": None, "metrics": {"m/x": v}} for e, v in
        ...      enumerate([60, 45, 20])]
        >>> crossings(h, {"m/x": "< 50"})[0]["epoch"]
        1
    """
    out = []
    for key, rule in thresholds.items():
        op, ref = parse_threshold(rule, key)
        hit = next((r for r in history if isinstance(r["metrics"].get(key), (int, float))
                    and math.isfinite(r["metrics"][key]) and _OPS[op](r["metrics"][key], ref)),
                   None)
        out.append({"metric": key, "rule": f"{op} {ref:g}",
                    "epoch": hit["epoch"] if hit else None, "step": hit["step"] if hit else None,
                    "value": hit["metrics"][key] if hit else None,
                    "measured": any(key in r["metrics"] for r in history)})
    return out


def read_monitor(path: str | Path) -> list[dict]:
    """The evaluations in a ``monitor.jsonl`` (a folder holding one, or the file)."""
    path = Path(path)
    path = path / MONITOR_FILE if path.is_dir() else path
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"epoch": row.get("epoch"), "step": row.get("step"),
                         "metrics": dict(row["metrics"]), "intervals": row.get("intervals", {}),
                         "skipped": row.get("skipped", {}), "seconds": row.get("seconds")})
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{i}: not a monitor record ({exc}); the file was written "
                            "by something else or cut off - remove that line") from None
    return rows


class TrainingCurvesOptions(AnalysisOptions):
    files: dict[str, str] | None = Field(None, description="model name -> a "
                                  "monitor.jsonl (or its folder) for models whose run "
                                  "directory holds none")
    thresholds: dict[str, str] | None = Field(None, description="metric key -> "
                                       "rule ('< 50'); the first epoch it held is reported "
                                       "(default: the monitor's own thresholds)")


def _files(ctx, files: dict[str, str]) -> dict[str, Path]:
    found = {k: Path(v) for k, v in files.items()}
    for name, entry in getattr(ctx, "entries", {}).items():
        if entry.run_dir is not None and (Path(entry.run_dir) / MONITOR_FILE).is_file():
            found.setdefault(name, Path(entry.run_dir) / MONITOR_FILE)
    return found


def _applies(ctx) -> bool:
    return bool(_files(ctx, {}))


def curves_table(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Long table: ``model, epoch, step, metric, value, lo, hi`` (one row per metric and
    evaluation; ``lo``/``hi``: the 95 % interval where the monitor gives one)."""
    rows = [{"model": m, "epoch": r["epoch"], "step": r["step"], "metric": k, "value": v,
             "lo": (r["intervals"].get(k) or {}).get("lo"),
             "hi": (r["intervals"].get(k) or {}).get("hi")}
            for m, hist in histories.items() for r in hist for k, v in r["metrics"].items()]
    return pd.DataFrame(rows, columns=["model", "epoch", "step", "metric", "value", "lo", "hi"])


def run(ctx, *, files: dict[str, str] | None, thresholds: dict[str, str] | None) -> AnalysisResult:
    """Curves of every monitored model and the thresholds' first crossings."""
    paths = _files(ctx, files or {})
    if not paths:
        raise ConfigError("training_curves: no monitor.jsonl in the models' run directories; "
                          "train with an AuditMonitor / callback, or give files={model: path}")
    histories, cross = {}, []
    for name, path in paths.items():
        histories[name] = read_monitor(path)
        rules = thresholds
        if rules is None or not rules:
            saved = Path(path).parent / SUMMARY_FILE
            rules = (json.loads(saved.read_text()).get("options", {}).get("thresholds", {})
                     if saved.is_file() else {})
        cross += [{"model": name, **c} for c in crossings(histories[name], rules)]
    table = curves_table(histories)
    summary = {"models": {m: {"evaluations": len(h), "first": h[0]["metrics"] if h else {},
                              "last": h[-1]["metrics"] if h else {},
                              "first_epoch": h[0]["epoch"] if h else None,
                              "last_epoch": h[-1]["epoch"] if h else None,
                              "seconds_per_evaluation": _mean_seconds(h)}
                          for m, h in histories.items()},
               "crossings": cross}
    tables = {"curves": table}
    if cross:
        tables["crossings"] = pd.DataFrame(cross)
    result = AnalysisResult("training_curves", summary, tables)
    if len(table):
        result.figures["curves"] = _figure(table)
    return result


def _mean_seconds(hist: list[dict]) -> float | None:
    s = [r["seconds"] for r in hist if isinstance(r.get("seconds"), (int, float))]
    return sum(s) / len(s) if s else None


#: the curves drawn (one panel each) when present: total distance and mean CKA stand for their
#: per-layer-group keys (all of which stay in the table)
PANELS = ("target_accuracy/accuracy", "retained_knowledge/classes_recall_ge_50",
          "retained_knowledge/mean_recall", "distance_to_pretrained/total",
          "cka_to_pretrained/mean")


def _figure(table: pd.DataFrame):
    from transferscope.analyses._figures import subplots

    keys = [k for k in PANELS if k in set(table["metric"])] or sorted(set(table["metric"]))[:6]
    fig, axes = subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for model, part in table[table["metric"] == key].groupby("model", sort=False):
            line, = ax.plot(part["epoch"], part["value"], marker="o", label=str(model))
            band = part.dropna(subset=["lo", "hi"])
            if len(band):
                ax.fill_between(band["epoch"], band["lo"].astype(float),
                                band["hi"].astype(float), alpha=0.2, color=line.get_color())
        ax.set_title(key, fontsize=8)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def finding(result: AnalysisResult) -> Finding | None:
    """How each monitored metric moved from the first evaluation to the last, and when each
    threshold was first crossed."""
    models = result.summary.get("models") or {}
    if not models:
        return None
    clauses = []
    for name, m in models.items():
        moved = [f"{k} {_num(m['first'][k])} -> {_num(m['last'][k])}" for k in PANELS
                 if k in m["first"] and k in m["last"]]
        clauses.append(f"{name}, epochs {m['first_epoch']}-{m['last_epoch']} "
                       f"({m['evaluations']} evaluations): " + "; ".join(moved))
    for c in result.summary.get("crossings", []):
        clauses.append(f"{c['model']}: {c['metric']} {c['rule']} first at epoch {c['epoch']}"
                       if c["epoch"] is not None else
                       f"{c['model']}: {c['metric']} never {c['rule']}"
                       + ("" if c["measured"] else " (never measured)"))
    return Finding("During training", "what the monitor measured on its fixed probe images, "
                   "epoch by epoch", clauses=tuple(clauses),
                   caveat="Probe-set numbers: a few dozen images per evaluation; a full audit "
                   "of the final weights gives the intervals over all images.",
                   numbers={f"{n}/{k}": v for n, m in models.items()
                            for k, v in m["last"].items()})


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


register_analysis("training_curves", title="During training: monitor metrics per epoch",
                  paper="papers 000 and 003 on a probe set", section="during_training",
                  options=TrainingCurvesOptions, run=run, finding=finding, applies=_applies)

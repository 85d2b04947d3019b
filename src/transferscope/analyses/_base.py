"""What every analysis returns, and how it is written to disk."""

from __future__ import annotations

import base64
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferscope._io import atomic_write_bytes, atomic_write_json
from transferscope._paths import safe_component

__all__ = ["AnalysisResult"]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass
class AnalysisResult:
    """Tables (pandas), a JSON-able summary and matplotlib figures of one analysis.

    ``images`` are small JPEG thumbnails (bytes) keyed by name, kept together in one file,
    ``images/<name>.json`` (base64), and shown in the report's class drill-downs.
    """

    name: str
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "AnalysisResult":
        """Read back a ``results/<name>.json`` written by :meth:`save` (figures stay on disk)."""
        data = json.loads(Path(path).read_text())
        stem = safe_component(data["name"], slug=True)
        thumbs = Path(path).parent.parent / "images" / f"{stem}.json"
        images = {k: base64.b64decode(v) for k, v in json.loads(thumbs.read_text()).items()
                  } if thumbs.exists() else {}
        order = dict(data.get("columns", {}))  # the JSON's records have sorted keys
        for key, records in data["tables"].items():  # older results: the CSV header's order
            header = Path(path).parent / f"{stem}__{safe_component(key, slug=True)}.csv"
            if key not in order and records and header.exists():
                with open(header, newline="") as fh:
                    cols = next(csv.reader(fh), [])
                if set(cols) == set(records[0]):
                    order[key] = cols
        return cls(data["name"], data["summary"],
                   {k: pd.DataFrame(v, columns=order.get(k)) for k, v in data["tables"].items()},
                   {}, data["notes"], images)

    def __repr__(self) -> str:  # short: never the thumbnails' bytes or whole tables
        tables = ", ".join(f"{k} ({len(t)} rows)" for k, t in self.tables.items())
        return (f"AnalysisResult({self.name!r}: summary keys {list(self.summary)[:6]}"
                f"{' ...' if len(self.summary) > 6 else ''}; tables {tables or 'none'}; "
                f"{len(self.figures)} figures, {len(self.images)} thumbnails)")

    def _repr_html_(self) -> str:  # notebooks show the result inline
        from transferscope.analyses._html import result_html

        return result_html(self)

    def save(self, out_dir: str | Path) -> dict[str, list[str]]:
        """Write ``results/<name>.json``, ``results/<name>__<table>.csv``, ``figures/*.png``
        (and ``images/<name>.json`` when there are thumbnails)."""
        out_dir = Path(out_dir)
        written: dict[str, list[str]] = {"json": [], "csv": [], "figures": []}
        payload = {"name": self.name, "summary": _jsonable(self.summary), "notes": self.notes,
                   "tables": {k: json.loads(v.to_json(orient="records"))
                              for k, v in self.tables.items()},
                   "columns": {k: [str(c) for c in v.columns] for k, v in self.tables.items()}}
        stem = safe_component(self.name, slug=True)  # a hostile name stays inside out_dir
        path = out_dir / "results" / f"{stem}.json"
        atomic_write_json(path, payload)
        written["json"].append(str(path))
        for key, table in self.tables.items():
            path = out_dir / "results" / f"{stem}__{safe_component(str(key), slug=True)}.csv"
            atomic_write_bytes(path, table.to_csv(index=False).encode())
            written["csv"].append(str(path))
        path = out_dir / "images" / f"{stem}.json"
        if self.images:
            atomic_write_json(path, {k: base64.b64encode(v).decode()
                                     for k, v in self.images.items()})
            written["images"] = [str(path)]
        elif path.exists():  # a re-run without thumbnails: none of the old ones stays
            path.unlink()
        for key, fig in self.figures.items():
            import io

            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            path = out_dir / "figures" / f"{stem}__{safe_component(str(key), slug=True)}.png"
            atomic_write_bytes(path, buf.getvalue())
            written["figures"].append(str(path))
            if "matplotlib.pyplot" in sys.modules:  # a pyplot figure of a user's analysis
                sys.modules["matplotlib.pyplot"].close(fig)
        return written

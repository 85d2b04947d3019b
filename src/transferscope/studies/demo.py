"""The demo: two studies, one report.

Part 1 (papers 000/001): ImageNet EfficientNet-Lite0 fine-tuned on ants vs bees - what the
fine-tuned model still remembers of ImageNet and where that memory interferes. Part 2 (papers
002/003/004): what is transferred, on chest X-rays (pneumonia vs normal; paper 003 used
CheXpert) - a target on which the networks trained from random initialisation learn (87-90 %
in three or four epochs at 64 px, where on ants vs bees they stay near chance), so every P-T
vs RI-T comparison compares two models that learned.

:func:`run_demo` runs part 1 into ``out`` and part 2 into ``out/transfer`` (each a complete
study folder: ``study.toml``, runs, results, report), then writes ``out/report.html`` with
both parts; part 2's results are copied into ``out/results`` with a note naming their target.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from transferscope.studies.demo_toml import DEMO_TOML, DEMO_TRANSFER_TOML
from transferscope.studies.run import run_study
from transferscope.studies.spec import parse_study, quick as make_quick, with_executor

__all__ = ["demo_studies", "run_demo", "TRANSFER_DIR", "xray_target"]

TRANSFER_DIR = "transfer"
#: part 2's X-ray target: the prepared copy where the data root has it, else the same
#: Kermany et al. X-rays at 64 px as PneumoniaMNIST (a 20 MB download instead of 1.2 GB)
XRAY_PREPARED, XRAY_DOWNLOAD = "chest-xray", "pneumoniamnist"


def xray_target(data_root=None) -> str:
    """The demo's X-ray set: ``chest-xray`` when the data root holds it, else
    ``pneumoniamnist`` (downloaded on first use).

    >>> xray_target("/nonexistent")
    'pneumoniamnist'
    """
    from transferscope import config

    folder = config.data_root(data_root) / XRAY_PREPARED
    return XRAY_PREPARED if folder.is_dir() and any(folder.iterdir()) else XRAY_DOWNLOAD


def demo_studies(quick: bool = False, data_root=None) -> list[tuple[object, str, str]]:
    """``[(StudySpec, toml text, sub-folder)]`` of the demo's two parts (``quick``: the
    smoke-test variant of each, see :func:`transferscope.studies.spec.quick`); part 2's
    target is :func:`xray_target`."""
    parts = []
    xray = xray_target(data_root)
    transfer = DEMO_TRANSFER_TOML.replace(f'"{XRAY_PREPARED}"', f'"{xray}"')
    for text, sub, label in ((DEMO_TOML, "", "demo study"),
                             (transfer, TRANSFER_DIR, "demo study, part 2")):
        spec = parse_study(text, label)
        if quick:
            spec, text = make_quick(spec), "# --quick variant of this study\n" + text
        parts.append((spec, text, sub))
    return parts


def run_demo(out: str | os.PathLike, *, quick: bool = False, data_root=None,
             log_to: str | None = None, executor: str | None = None) -> Path:
    """Run both parts (fetching missing data sets first) and write ``out/report.html``."""
    from transferscope.data.fetch import ensure_sets
    from transferscope.report import write_report

    out = Path(out)
    parts = [(with_executor(s, executor), t, sub)
             for s, t, sub in demo_studies(quick, data_root)]
    ensure_sets(sorted({e for s, _, _ in parts for e in (s.target.data, *s.source_images.sets)}),
                data_root)  # every download first: offline, all missing sets in one message
    results = {}
    for spec, text, sub in parts:
        found, _ = run_study(spec, out / sub, spec_text=text, data_root=data_root,
                             log_to=log_to)
        if sub:
            found = _adopt(out, out / sub, found, spec)
        clash = set(found) & set(results)
        if clash:  # pragma: no cover - the demo's parts select disjoint analyses
            raise RuntimeError(f"demo parts both ran {sorted(clash)}")
        results.update(found)
    return write_report(out, results, title="transferscope demo: what ImageNet "
                        "EfficientNet-Lite0 remembers, transfers and breaks",
                        spec_text="\n\n".join(t for _, t, _ in parts))


def _adopt(out: Path, part_dir: Path, found: dict, spec) -> dict:
    """Copy a part's results (JSON, CSV, thumbnails) and figures into ``out``, each noting
    the part's target, so that ``out`` holds the whole demo (its report can be rebuilt)."""
    from transferscope.analyses._base import AnalysisResult

    adopted = {}
    for name in found:
        res = AnalysisResult.load(part_dir / "results" / f"{name}.json")
        note = (f"Target: {spec.target.data} at {spec.image_size} px (the demo's part 2, "
                f"its own study folder {part_dir.name}/).")
        if note not in res.notes:
            res.notes.insert(0, note)
        res.save(out)
        for fig in (part_dir / "figures").glob(f"{name}__*.png"):
            (out / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig, out / "figures" / fig.name)
        adopted[name] = res
    return adopted

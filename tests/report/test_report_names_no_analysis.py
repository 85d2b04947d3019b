"""Issue 25: the report names no analysis. Charts, galleries, drill-down panels and resolution
notes come from each analysis's registration, so adding or renaming an analysis never
touches ``transferscope/report``."""

from __future__ import annotations

import re
from pathlib import Path

import transferscope.report
from transferscope.analyses import list_analyses


def test_report_package_and_its_scripts_name_no_analysis():
    root = Path(transferscope.report.__file__).parent
    names = set(list_analyses())
    hits = []
    for f in sorted(root.rglob("*")):
        if f.suffix not in (".py", ".js"):
            continue
        for n in re.findall(r"[\"']([a-z_]+)[\"']", f.read_text()):
            if n in names:
                hits.append(f"{f.relative_to(root)}: {n!r}")
    assert not hits, hits

"""Issue 25's before/after figures for a checkout: where analysis names are written outside
their own module, how many places write the barrier lambdas and the 64-image default, and the
longest function and signature.

    python benchmarks/design_metrics.py [SRC_DIR]     # default: this checkout's src/transferscope
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path


def analysis_names(src: Path) -> list[str]:
    """The analyses: one module per analysis under analyses/ (private modules excluded)."""
    skip = {"context"}
    return sorted(p.stem for p in (src / "analyses").glob("*.py")
                  if not p.stem.startswith("_") and p.stem not in skip)


def names_outside(src: Path) -> dict[str, int]:
    """Quoted analysis names per area (report, runners, other), outside the analysis's module."""
    names = set(analysis_names(src))
    areas = {"report (py + js)": 0, "study runners": 0}
    for f in list(src.rglob("*.py")) + list(src.rglob("*.js")):
        rel = f.relative_to(src).as_posix()
        if rel.startswith("analyses/") and f.stem in names:
            continue
        hits = sum(1 for n in re.findall(r"[\"']([a-z_]+)[\"']", f.read_text()) if n in names)
        if not hits:
            continue
        if "report" in rel:
            areas["report (py + js)"] += hits
        elif rel in ("studies/runner.py", "studies/memory.py", "studies/what_transferred.py"):
            areas["study runners"] += hits
    return areas


def default_homes(src: Path) -> dict[str, str]:
    """Places that write a literal value for the barrier lambdas and for ``images = 64``
    (code only: a docstring's theta_lambda is no home), with where they are."""
    lam = re.compile(r"\blambdas?\s*(?::[^=\n]*)?=\s*(?:Field\()?\s*(?:[\(\[]\s*-?\d|"
                     r"np\.linspace|torch\.linspace|_lin)", re.IGNORECASE)
    img = re.compile(r"\bimages\s*(?::\s*int)?\s*=\s*(?:Field\()?\s*64\b")
    found: dict[str, list[str]] = {"barrier lambdas": [], "images = 64": []}
    for f in sorted(src.rglob("*.py")):
        for no, line in enumerate(f.read_text().splitlines(), 1):
            where = f"{f.relative_to(src).as_posix()}:{no}"
            if lam.search(line):
                found["barrier lambdas"].append(where)
            if img.search(line):
                found["images = 64"].append(where)
    return {k: f"{len(v)} ({', '.join(v)})" for k, v in found.items()}


def longest(src: Path) -> dict[str, str]:
    funcs = []
    for f in src.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + \
                    bool(a.vararg) + bool(a.kwarg)
                where = f"{f.relative_to(src).as_posix()}:{node.name}"
                funcs.append((node.end_lineno - node.lineno + 1, params, where))
    by_len = max(funcs)
    by_sig = max(funcs, key=lambda t: t[1])
    return {"longest function": f"{by_len[0]} lines ({by_len[2]})",
            "longest signature": f"{by_sig[1]} parameters ({by_sig[2]})",
            "functions over 100 lines": str(sum(t[0] > 100 for t in funcs))}


def main(src: Path) -> None:
    print(f"# {src}")
    for k, v in {**names_outside(src), **default_homes(src), **longest(src)}.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "src" /
         "transferscope")

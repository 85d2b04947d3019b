"""The example notebook runs from top to bottom (nbclient, a real ipykernel) on its tiny audit,
showing the report and a result inline and keeping the notebook's matplotlib backend."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "audit.ipynb"


def test_example_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.delenv("TRANSFERSCOPE_AUDIT_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the tiny audit's folder
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # stored clean
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("transferscope-report" in h and "Findings" in h for h in html)  # Report inline
    assert any("transferscope-result" in h and "retained_knowledge" in h for h in html)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "- Retained knowledge:" in text and "<b>" not in text  # plain sentences
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the inline plot
    assert list(tmp_path.glob("transferscope-notebook-*/audit/report.html"))
    assert seconds < 120, seconds

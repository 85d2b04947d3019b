"""The HTML report in a real headless browser (Debian's chromium): it renders, every image
loads, nothing is written to the console. Skipped where chromium is not installed."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from transferscope.analyses._base import AnalysisResult  # noqa: E402
from transferscope.report import load_results, write_report  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _results(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    res = AnalysisResult(
        "interference_bias",
        {"samples/fine-tuned": {"strongly_biased": 7, "mean_strength": 0.4,
                                "toward": {"ants": 4, "bees": 3}}},
        {"table": pd.DataFrame({"model": ["fine-tuned"], "high ants bias": [4]})},
        {"bias_hist": fig}, ["a note <with> markup"])
    res.save(tmp_path)
    return {"interference_bias": res}


def test_report_is_self_contained_and_escaped(tmp_path):
    path = write_report(tmp_path, _results(tmp_path), title="t <1>", spec_text="a = 'b'")
    html = path.read_text()
    assert "data:image/png;base64," in html and "src=\"http" not in html
    assert "a note &lt;with&gt; markup" in html and "t &lt;1&gt;" in html
    assert "Interference bias" in html and "fine-tuned: 7 (4 toward 'ants'" in html
    again = write_report(tmp_path, load_results(tmp_path), title="t <1>")
    assert "fine-tuned: 7 (4 toward" in again.read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    path = write_report(tmp_path, _results(tmp_path), title="browser test")
    run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                          "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", run.stdout).group(1)
    total = int(re.search(r'data-images="(\d+)"', body).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body).group(1))
    assert total >= 1 and loaded == total
    assert "CONSOLE" not in run.stderr, [l for l in run.stderr.splitlines() if "CONSOLE" in l]

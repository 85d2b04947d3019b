"""The HTML report in a real headless browser (Debian's chromium, driven by Playwright): it
renders, every image loads, nothing is written to the console, sorting and filtering change
what is shown, a CSV downloads, a class drill-down opens. Skipped where chromium is not
installed (``.ci/run`` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from _report_synthetic import CLASSES, EVIL, synthetic_results  # noqa: E402
from transferscope.analyses._base import AnalysisResult  # noqa: E402
from transferscope.data import imagenet_wnids  # noqa: E402
from transferscope.report import load_results, write_report  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="chromium not installed (apt-get install chromium)")


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
    assert "Interference bias" in html and "fine-tuned: 7 with max B &gt;= 0.8 (4 toward" in html
    again = write_report(tmp_path, load_results(tmp_path), title="t <1>")
    assert "fine-tuned: 7 with max B &gt;= 0.8 (4 toward" in again.read_text()


@needs_chromium
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


def _shown(host, col: int) -> list[str]:
    return host.locator("tbody tr").evaluate_all(
        f"rows => rows.map(r => r.children[{col}].textContent)")


@needs_chromium
def test_report_sorts_filters_downloads_and_drills_down(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    path = write_report(tmp_path, synthetic_results(tmp_path), title="explore <me>")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, accept_downloads=True)
        page.set_default_timeout(15000)
        console, urls = [], []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.on("request", lambda r: urls.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(tmp_path / "first.png"))
        # figures: grouped bars (2 models x 6 recall bins), a 2 x 2 heat map with one value
        assert page.locator("svg.chart rect").count() == 2 * 6 + 4
        assert page.locator(".heatmaps svg text").all_text_contents().count("-0.50") == 2
        # every composite with each model's prediction; one Grad-CAM row per background class
        assert page.locator(".ts-gallery").count() == 2
        assert page.locator(".ts-gallery img").count() == 8 + 4 * (2 + 2)
        assert "n02087394 (Rhodesian Ridgeback) \u2713" in page.locator(".ts-gallery").first.text_content()
        idx = page.evaluate("window.transferscope.tables.findIndex(t => t.d.analysis === "
                            "'retained_knowledge' && t.d.key === 'per_class')")
        host = page.locator(".ts-table").nth(idx)
        cols = host.locator("thead th").all_text_contents()
        assert cols == ["source images", "model", "class", "class name", "wnid", "recall"]
        assert host.locator(".count").first.text_content() == "120 rows"
        assert host.locator("tbody tr").count() == 25  # first page of 5
        before = _shown(host, 5)
        host.locator("thead th", has_text="recall").click()
        up = [float(v) for v in _shown(host, 5)]
        assert up == sorted(up) and up != [float(v) for v in before]
        host.locator("thead th", has_text="recall").click()
        down = [float(v) for v in _shown(host, 5)]
        assert down == sorted(down, reverse=True) and down[0] == 1.0
        host.locator("input[type=search]").fill("tench")
        assert host.locator(".count").first.text_content() == "2 of 120 rows"
        assert set(_shown(host, 3)) == {"tench"}
        host.locator("input[type=search]").fill("")
        host.locator("select[aria-label=model]").select_option("fine-tuned + source head (M^st)")
        assert host.locator(".count").first.text_content() == "60 of 120 rows"
        host.locator("input[type=search]").fill("n016")  # a wnid prefix
        want = {w for w in (imagenet_wnids()[c] for c in CLASSES) if w.startswith("n016")}
        assert set(_shown(host, 4)) == want and len(_shown(host, 4)) == len(want) > 1
        host.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "table.png"))
        with page.expect_download() as dl:
            host.locator("button.csv").click()
        lines = open(dl.value.path()).read().splitlines()
        assert dl.value.suggested_filename == "retained_knowledge__per_class.csv"
        assert lines[0] == ",".join(cols) and len(lines) == 1 + len(want)  # the rows shown
        assert {line.split(",")[4] for line in lines[1:]} == want
        host.locator("input[type=search]").fill("tench")
        host.locator("select[aria-label=model]").select_option("")
        host.locator("tbody tr").first.click()  # drill down
        drill = page.locator("#drill")
        drill.wait_for(state="visible")
        assert drill.locator("h2").text_content() == "tench (n01440764)"
        text = drill.text_content()
        assert "Recall of this class per model" in text and "1 image(s) × 5 view(s)" in text
        assert "only 6 values" in text and "n02086240 (Shih Tzu)" in text  # bias legend
        assert "pasted: n02086240 (Shih Tzu)" in text and "Grad-CAM" in text
        assert drill.locator(".bar").count() == 2 + 2  # recall: 2 models; bias: 2 models
        page.wait_for_function("[...document.querySelectorAll('#drill img')].every("
                               "i => i.complete && i.naturalWidth > 0)")
        assert drill.locator("img").count() == 1 + 2 + 4  # views, composites, Grad-CAM row
        assert page.evaluate("location.hash") == "#class-0"
        page.screenshot(path=str(tmp_path / "drill.png"))
        page.keyboard.press("Escape")
        assert drill.is_hidden()
        assert page.evaluate("window.__xss") is None  # the hostile model name stayed text
        assert page.evaluate("t => document.body.textContent.includes(t)", EVIL)
        browser.close()
    assert console == [], console
    assert all(u.startswith(("file:", "data:", "blob:")) for u in urls), urls
    for name in ("first", "table", "drill"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"

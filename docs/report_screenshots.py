"""Screenshots of a report for the docs: the first screen, a sorted and filtered per-class
table, a class drill-down (headless Debian chromium via Playwright); with ``--summary`` only
the top of a quick run's report - smoke banner, "What this means for your model" - and its
glossary.

    python docs/report_screenshots.py DEMO/report.html [--filter dog] [--out docs]
    python docs/report_screenshots.py QUICK/report.html --summary [--out docs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

NAMES = ["report-first-screen", "report-sorted-filtered-table", "report-drilldown",
         "report-drilldown-gradcam"]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--filter", default="terrier", help="text typed into the table's filter")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--summary", action="store_true", help="only report-summary.png and "
                    "report-glossary.png")
    a = ap.parse_args()
    if a.summary:
        return summary_shots(a)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(a.report.resolve().as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(a.out / "report-first-screen.png"))
        idx = page.evaluate("window.transferscope.tables.findIndex(t => t.d.analysis === "
                            "'interference_bias' && t.d.key === 'per_class')")
        host = page.locator(".ts-table").nth(idx)
        host.locator("select[aria-label=model]").select_option(index=1)
        host.locator("input[type=search]").fill(a.filter)
        first_b = host.locator("thead th").filter(has_text="B[").first
        first_b.click()
        first_b.click()  # descending: the classes pulled hardest toward the first target
        host.scroll_into_view_if_needed()
        host.locator(".ctl").evaluate("e => e.scrollIntoView({block: 'start'})")
        page.evaluate("window.scrollBy(0, -40)")
        page.screenshot(path=str(a.out / "report-sorted-filtered-table.png"))
        cls = page.evaluate("(() => { const t = window.transferscope.tables.find(t => "
                            "t.d.analysis === 'composites' && t.d.key === 'per_background');"
                            " return t ? t.d.rows[0][t.d.classCol] : 0; })()")
        page.evaluate(f"window.transferscope.openClass({cls})")
        page.wait_for_function("[...document.querySelectorAll('#drill img')].every("
                               "i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(a.out / "report-drilldown.png"))
        page.locator("#drill").evaluate("e => e.scrollTop = e.scrollHeight * 0.38")
        page.screenshot(path=str(a.out / "report-drilldown-gradcam.png"))
        browser.close()
    for name in NAMES:  # 256-colour PNGs: a third of the size, no visible change for a page
        path = a.out / f"{name}.png"
        Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(
            path, optimize=True)
    if errors:
        raise SystemExit(f"page errors: {errors}")


def summary_shots(a) -> None:
    """``report-summary.png`` (banner and summary) and ``report-glossary.png``."""
    names = ["report-summary", "report-glossary"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(a.report.resolve().as_uri())
        page.wait_for_load_state("load")
        top = page.locator(".banner.smoke").bounding_box() or {"y": 0}
        end = page.locator("#summary").bounding_box()
        page.screenshot(path=str(a.out / "report-summary.png"), full_page=True,
                        clip={"x": 0, "y": max(0, top["y"] - 10), "width": 1100,
                              "height": end["y"] + end["height"] - top["y"] + 20})
        page.locator("#glossary").screenshot(path=str(a.out / "report-glossary.png"))
        browser.close()
    for name in names:
        path = a.out / f"{name}.png"
        Image.open(path).convert("RGB").quantize(128, dither=Image.Dither.NONE).save(
            path, optimize=True)


if __name__ == "__main__":
    main()

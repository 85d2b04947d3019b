"""The explorable report without a browser: complete tables embedded safely as JSON, class
names beside wnids, galleries for the drill-downs, resolution notes, linked findings."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from _report_synthetic import CLASSES, EVIL, VIEWS, synthetic_results
from conftest import make_folder, write_image
from transferscope.analyses._base import AnalysisResult
from transferscope.analyses._thumbs import (cam_gallery, class_gallery, composite_gallery, heat,
                                           overlay)
from transferscope.data import image_folder, imagenet_wnids, source_images
from transferscope.data.composite import CompositeSet
from transferscope.data.views import ViewSet
from transferscope.report import load_results, write_report
from transferscope.findings import Finding
from transferscope.report.findings import findings_html
from transferscope.stats import Interval
from transferscope.analyses._resolution import denominator
from transferscope.report.page import resolution_notes, source_class_columns, table_data


def embedded(html: str) -> dict[str, dict]:
    """Every JSON block of the page by id."""
    blocks = re.findall(r"<script type='application/json' id='([\w-]+)'>(.*?)</script>", html, re.S)
    return {k: json.loads(v) for k, v in blocks}


def test_tables_complete_json_safe_and_named(tmp_path):
    path = write_report(tmp_path, synthetic_results(tmp_path), title="t <1>")
    html = path.read_text()
    assert EVIL not in html and "<img src=x" not in html  # neither in JSON nor in findings
    assert html.count("</script") == html.count("<script")
    data = embedded(html)
    tables = {(d["analysis"], d["key"]): d for k, d in data.items() if k.startswith("tbl-")}
    assert ("retained_knowledge", "gallery") not in tables  # drill-down data, not a table
    per_class = tables[("retained_knowledge", "per_class")]
    assert len(per_class["rows"]) == 2 * len(CLASSES)  # complete: no row cap
    cols = per_class["columns"]
    assert cols[cols.index("class name") + 1] == "wnid" and per_class["classCol"] == cols.index("class")
    wnids = imagenet_wnids()
    assert all(r[cols.index("wnid")] == wnids[r[cols.index("class")]] for r in per_class["rows"])
    assert per_class["kinds"][cols.index("recall")] == "float"
    assert per_class["kinds"][cols.index("class")] == "int"
    bias = tables[("interference_bias", "per_class")]
    assert "B[n02086240 (Shih Tzu)]" in bias["columns"]  # imagewoof-style target classes
    assert EVIL in {r[bias["columns"].index("model")] for r in bias["rows"]}  # intact as data
    assert "base rate n02087394 (Rhodesian Ridgeback)" in tables[("interference_bias", "table")][
        "columns"]
    assert "chart" in tables[("retained_knowledge", "bins")]
    meta = data["ts-meta"]
    assert set(meta["galleries"]) == {"retained_knowledge", "composites", "distraction"}
    images = data["ts-images"]
    assert len(images) == len(CLASSES) + 8 + 4 * 4
    first = Image.open(io.BytesIO(__import__("base64").b64decode(images["retained_knowledge:class/0/0"])))
    assert first.format == "JPEG" and first.size == (VIEWS * 50 - 2, 48)
    # findings: one per analysis, linked to its section, names beside wnids, intervals shown
    assert "href='#interference_bias'" in html and "id='interference_bias'" in html
    assert "n02086240 (Shih Tzu)" in html.split("id='findings'")[1].split("</section>")[0]
    assert "mean_recall 0.4 [0.31, 0.49]" in html
    assert "a note &lt;b&gt;with&lt;/b&gt; markup" in html
    assert "takes only 6 values" in html and "[50,60[, [70,80[ are empty by construction" in html
    # reloaded from disk: same tables, same thumbnails, same page data
    again = load_results(tmp_path)
    assert again["composites"].images == synthetic_results(tmp_path / "b")["composites"].images
    assert list(again["retained_knowledge"].tables["bins"].columns)[:3] == [
        "source images", "model", "<50"]
    assert embedded(write_report(tmp_path, again, title="t <1>").read_text())["ts-images"] == images


def test_rerun_without_thumbnails_drops_the_old_ones(tmp_path):
    AnalysisResult("x", {}, {}, images={"a": b"\xff\xd8"}).save(tmp_path)
    assert AnalysisResult.load(tmp_path / "results" / "x.json").images == {"a": b"\xff\xd8"}
    AnalysisResult("x", {}, {}).save(tmp_path)
    assert AnalysisResult.load(tmp_path / "results" / "x.json").images == {}


def _results_with(samples: int, views: int, targets=("ants", "bees")) -> dict:
    gallery = pd.DataFrame([{"source images": "s", "class": 0, "images": samples // views,
                             "views": views, "samples": samples, "image": "k"}])
    table = pd.DataFrame([{"model": "m", **{f"base rate {t}": 0.5 for t in targets}}])
    return {"retained_knowledge": AnalysisResult("retained_knowledge", {}, {"gallery": gallery}),
            "interference_bias": AnalysisResult("interference_bias", {}, {"table": table})}


def test_resolution_notes_known_answers():
    res = _results_with(5, 5)
    (note,) = resolution_notes("retained_knowledge", res["retained_knowledge"], res)
    assert "over 5 samples (1 image x 5 views)" in note and "only 6 values (0, 20, 40, 60, 80, 100%)" in note
    assert "the bins [50,60[, [70,80[ are empty by construction" in note and "ImageNet validation" in note
    res = _results_with(2, 2)
    (note,) = resolution_notes("interference_bias", res["interference_bias"], res)
    assert "with fewer than 5 samples no class is tested, so none is called strongly" in note
    assert "Table-2 bins slight bees bias, slight ants bias are empty by construction" in note
    res = _results_with(10, 10)  # 50% counts as [50,60[ (paper 000), 70% as [70,80[: none empty
    (note,) = resolution_notes("retained_knowledge", res["retained_knowledge"], res)
    assert "only 11 values" in note and "empty by construction" not in note
    res = _results_with(20, 20)  # 55% fills it: a note on the 21 values, no empty bin
    (note,) = resolution_notes("retained_knowledge", res["retained_knowledge"], res)
    assert "only 21 values" in note and "empty" not in note
    res = _results_with(50, 1)
    assert resolution_notes("retained_knowledge", res["retained_knowledge"], res) == []
    # without a gallery the sample count is read off the recall values
    per_class = pd.DataFrame({"source images": "s", "class": [0, 1, 2], "recall": [0.0, 1 / 3, 1.0]})
    res = {"retained_knowledge": AnalysisResult("retained_knowledge", {}, {"per_class": per_class})}
    assert "over 3 samples, so it takes only 4 values" in resolution_notes(
        "retained_knowledge", res["retained_knowledge"], res)[0]
    assert denominator([0.25, 0.5]) == 4 and denominator([0.123456]) is None


def test_source_class_columns_need_matching_imagenet_names():
    ok = pd.DataFrame({"class": [0, 1], "class name": ["tench", "goldfish"]})
    assert source_class_columns(ok) == [("class", "class name")]
    target = pd.DataFrame({"class": [0, 1], "class name": ["ants", "bees"]})  # target classes
    assert source_class_columns(target) == [] and table_data(target)["classCol"] == -1
    odd = table_data(pd.DataFrame({"x": [np.float32(np.inf), np.nan, 0.1234567891, 2.0],
                                   "flag": [True, False, None, True]}))
    assert odd["kinds"] == ["float", "bool"]
    assert odd["rows"] == [[None, True], [None, False], [0.123457, None], [2.0, True]]
    bg = pd.DataFrame({"background class": [2], "background name": ["great white shark"]})
    d = table_data(bg)
    assert d["columns"] == ["background class", "background name", "background wnid"]
    assert d["rows"] == [[2, "great white shark", "n01484850"]]


def test_class_gallery_strips_and_sample_counts(tmp_path):
    for wnid, rgb in (("n01440764", (200, 40, 40)), ("n01443537", (40, 200, 40))):
        for i in range(3):
            write_image(tmp_path / "src" / f"{wnid}_{i}.JPEG", rgb, size=(60, 40))
    base = source_images(tmp_path / "src")
    rows, images = class_gallery({"plain": base, "views": ViewSet(base, 4)}, tile=20, max_tiles=5)
    plain = [r for r in rows if r["source images"] == "plain"]
    views = [r for r in rows if r["source images"] == "views"]
    assert [(r["class"], r["images"], r["views"], r["samples"]) for r in plain] == [(0, 3, 1, 3), (1, 3, 1, 3)]
    assert [(r["class"], r["samples"]) for r in views] == [(0, 12), (1, 12)]
    strip_plain = Image.open(io.BytesIO(images[plain[0]["image"]]))
    strip_views = Image.open(io.BytesIO(images[views[1]["image"]]))
    assert strip_plain.size == (3 * 22 - 2, 20) and strip_views.size == (4 * 22 - 2, 20)
    # the tiles show the class: red dominates the first class's strip, green the second's
    r, g, _ = np.asarray(strip_plain, float).reshape(-1, 3).mean(0)
    assert r > g + 40
    r, g, _ = np.asarray(strip_views, float)[:, :20].reshape(-1, 3).mean(0)
    assert g > r + 40


def test_composite_and_cam_galleries(tmp_path):
    make_folder(tmp_path / "t", per_class=2)
    for c, wnid in enumerate(("n01440764", "n01443537")):
        write_image(tmp_path / "src" / f"{wnid}_0.JPEG", (40, 200, 40))
    comp = CompositeSet(source_images(tmp_path / "src"), image_folder(tmp_path / "t"),
                        [0, 1], [0, 1, 2, 3], size=32, repeats=2, seed=0)
    classes = ["ants", "bees"]
    preds = {"a": comp.targets.clone(), "b": torch.zeros(len(comp), dtype=torch.long)}
    rows, images = composite_gallery(comp, preds, classes, per_class=4, side=24)
    assert {r["background class"] for r in rows} == {0, 1}
    for r in rows:  # one composite per (background, pasted class), each model's prediction
        i = r["composite"]
        assert r["a"] == r["pasted class"] == classes[int(comp.targets[i])] and r["b"] == "ants"
        assert int(comp.background_labels[i]) == r["background class"]
    assert len(rows) == 4 and Image.open(io.BytesIO(images[rows[0]["image"]])).size == (24, 24)
    src = torch.zeros(len(comp), 4, 4)
    src[:, 0, 0] = 1.0  # hot top-left
    tgt = torch.zeros(len(comp), 4, 4)
    tgt[:, 3, 3] = 1.0  # hot bottom-right
    score = {"a": np.arange(len(comp)) / 10}
    rows, images = cam_gallery(comp, src, {"a": tgt}, score, classes, side=32)
    assert [r["background"] for r in rows] == [0, 1]
    assert rows[1]["distraction a"] == pytest.approx(rows[1]["composite"] / 10)
    i = rows[0]["composite"]
    for key, cam, other in (("cam source", src[i], tgt[i]), ("cam a", tgt[i], src[i])):
        shown = np.asarray(Image.open(io.BytesIO(images[rows[0][key]])), float)
        err = [np.abs(shown - np.asarray(overlay(comp.load_image(i), m, 32), float)).mean()
               for m in (cam, other)]
        assert err[0] < 10 and err[0] < err[1] / 2  # its own map, up to JPEG noise
    # jet colours: the hot corner red (dark red at the maximum), the cold corner blue
    h = heat(src[i], 32)
    assert (h[:3, :3] == [127, 0, 0]).all() and (h[-3:, -3:] == [0, 0, 127]).all()
    assert (heat(torch.zeros(4, 4), 8) == [0, 0, 127]).all()  # an all-zero map stays cold


def test_findings_render_sentences_values_and_links():
    f = Finding("Retained knowledge", "fine-tuned recognises 19 of 143 classes toward n02086240",
                estimates=(("fine-tuned", Interval(19, 15, 23, "source class", 143)),
                           ("share", Interval(0.13, 0.1, 0.16, "source class", 143))),
                analysis="retained_knowledge")
    assert f.values == [("fine-tuned", 19, (15, 23)), ("share", 0.13, (0.1, 0.16))]
    markup = findings_html([f, Finding.from_html("<b>A</b>: lead - m 1; n 2.")])
    assert "href='#retained_knowledge'" in markup and "fine-tuned 19 [15, 23]" in markup
    assert "n02086240 (Shih Tzu)" in markup and "over 143 source class" in markup
    s = Finding.from_html("<b>Occlusion</b>: fixed - m 1 of 2; n &ge; 3 (x; y).")
    assert s.html == "<b>Occlusion</b>: fixed" and s.parts == ["m 1 of 2", "n ≥ 3 (x; y)"]
    assert s.text == "Occlusion: fixed - m 1 of 2; n ≥ 3 (x; y)."
    evil = Finding("T", "<script>", clauses=("<img src=x>",))
    assert "<script>" not in findings_html([evil]) and "<img" not in findings_html([evil])


def test_result_and_report_render_inline(tmp_path):
    from transferscope.analyses._figures import subplots
    from transferscope.report import Report

    results = synthetic_results(tmp_path)
    html = results["interference_bias"]._repr_html_()
    assert EVIL not in html and "&lt;/script&gt;&lt;img" in html
    assert "<b>per_class</b> (120 rows x 7 columns, first 10 shown" in html
    fig, ax = subplots(figsize=(2, 1))
    ax.plot([0, 1])
    assert "data:image/png;base64," in AnalysisResult("x", {}, {}, {"f": fig})._repr_html_()
    report = Report(tmp_path, results)
    page = report._repr_html_()
    assert "Findings" in page and EVIL not in page and "interference_bias" in page
    found = report.findings()
    assert [f.analysis for f in found] == ["retained_knowledge", "interference_bias",
                                           "composites", "distraction"]  # the page's order
    assert "Findings" in page and "<td>agreement</td>" in page
    text = report.findings_text()
    assert text[0].startswith("Retained knowledge: with the source head put back")
    assert "&ge;" not in text[0] and "≥" in text[0] and EVIL in text[1]  # plain, unescaped
    assert found[0].values == [("samples/fine-tuned + source head (M^st) mean_recall", 0.4,
                                (0.31, 0.49))]
    assert report["composites"] is results["composites"]


def test_analyses_leave_the_matplotlib_backend_alone(monkeypatch):
    import pathlib

    import matplotlib

    import transferscope
    from transferscope.analyses import interference_bias as bias
    from transferscope.analyses import retained_knowledge as retained
    from transferscope.analyses import spectra

    calls = []
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: calls.append(a))
    retained._figure({("s", "m"): torch.tensor([0.2, 1.0, float("nan")])})
    bias._figure({("s", "m"): torch.tensor([[0.2, 0.8], [1.0, 0.0]])}, ["a", "b"])
    spectra.plot_hist({"m": torch.rand(10)})
    assert calls == []
    src = pathlib.Path(transferscope.__file__).parent
    assert not [p.name for p in src.rglob("*.py") if "matplotlib.use(" in p.read_text()]


def test_thumbnails_stay_within_the_image_budget(tmp_path):
    from transferscope.report.page import ReportPage

    results = synthetic_results(tmp_path)
    full = embedded(ReportPage(results, tmp_path).tail())
    sizes = sorted(len(v) for v in full["ts-images"].values())
    budget = sum(sizes[:10]) + 1
    capped = embedded(ReportPage(results, tmp_path, image_budget=budget).tail())
    assert sum(len(v) for v in capped["ts-images"].values()) <= budget
    assert capped["ts-meta"]["droppedImages"] == len(sizes) - len(capped["ts-images"]) > 0


def test_bias_resolution_note_says_what_the_analysis_tests():
    """Issue 27: the note described 'strongly biased' as max B >= 0.8 alone; the analysis
    calls a class strongly biased by a per-class binomial test with Benjamini-Hochberg."""
    from transferscope.analyses._base import AnalysisResult
    from transferscope.analyses.interference_bias import FDR_Q, MIN_VIEWS
    from transferscope.report.page import resolution_notes

    def notes(views):
        ret = AnalysisResult("retained_knowledge", {"samples/m": {"classes": 3}})
        ret.tables["per_class"] = pd.DataFrame({"source images": ["samples"] * 3,
                                                "class": [0, 1, 2], "recall": [0.0, 1.0, 1.0]})
        res = AnalysisResult("interference_bias", {})
        return resolution_notes("interference_bias", res, {"retained_knowledge": ret}), views

    from transferscope.analyses import _resolution as page

    for views, expect in ((3, f"fewer than {MIN_VIEWS} samples no class is tested"),
                          (10, f"Benjamini-Hochberg at q = {FDR_Q:g}")):
        orig = page.samples_per_class
        page.samples_per_class = lambda results, v=views: {"samples": {
            "samples": v, "images": 1, "views": v}}
        try:
            text = " ".join(notes(views)[0])
        finally:
            page.samples_per_class = orig
        assert expect in text, text

"""Known-answer tests of the composites and occlusion verdicts (issue 26, items 2 and 3);
each failed on 5d2cc38."""

from __future__ import annotations

import numpy as np
import pytest

from test_memory_analyses import audit  # noqa: F401  (fixture)
from transferscope.analyses import get_analysis
from transferscope.analyses.composites import accuracy_intervals
from transferscope.analyses.context import ModelEntry
from transferscope.stats import Verdict

PLAN = dict(n_biased=1, n_neutral=1, overlays_per_class=2, repeats=2, style="paper001")


def _with_roles(ctx):
    ctx.entries = {k: ModelEntry(k, k if k in ("fine-tuned", "scratch") else "other", m.arch)
                   for k, m in ctx.targets.items()}
    return ctx


def test_accuracy_intervals_resample_background_images():
    # 4 background images x 10 composites; composites of one image all right or all wrong
    bg = np.repeat(np.arange(4), 10)
    hits = np.repeat([1.0, 0.0, 1.0, 0.0], 10)
    kind = np.array(["neutral"] * 20 + ["against"] * 20)
    r = accuracy_intervals([1, 1, 0], hits, kind, clusters=bg)
    iv = r["intervals"]["all composites"]
    assert (iv["unit"], iv["n"], iv["value"]) == ("background image", 4, 0.5)
    assert r["intervals"]["clean"]["unit"] == "target image"
    assert r["intervals"]["against"]["n"] == 2 and r["n_against"] == 20
    # over composites (5d2cc38) the 40 items looked independent: a far narrower interval
    by_item = accuracy_intervals([1, 1, 0], hits, kind)["intervals"]["all composites"]
    assert iv["hi"] - iv["lo"] > 2 * (by_item["hi"] - by_item["lo"])


def test_composites_compare_models_as_pairs_and_test_the_claim(audit):
    from transferscope.analyses import composites

    res = composites.run(_with_roles(audit), **PLAN)
    s = res.summary
    assert s["background_images"] == 9 and s["unit"] == "background image"
    ft = s["models"]["fine-tuned"]["intervals"]
    assert ft["all composites"]["unit"] == "background image" and ft["all composites"]["n"] == 9
    (cmp,) = s["comparisons"]
    assert (cmp["a"], cmp["b"]) == ("fine-tuned", "scratch")
    assert cmp["difference"]["unit"] == "background image"
    # fine-tuned: every overlay right alone, every composite over an 'against' background
    # wrong (drop 1); scratch always says class 0, on the overlay alone as on the composite
    # (drop 0): fine-tuned minus scratch = 1 on each of the 6 biased background images
    d = s["claim"]["comparison"]["difference"]
    assert (d["value"], d["lo"], d["hi"], d["n"]) == (1.0, 1.0, 1.0, 6)
    f = get_analysis("composites").finding(res)
    assert [c.claim for c in f.checks] == ["000.composites"]
    # the interval is wholly above 0, but 6 background images are too few to tell
    assert f.checks[0].verdict is Verdict.CANNOT_TELL
    assert f.checks[0].why.startswith("too few background images to tell (6;")
    assert "too few background images" in f.caveat  # 9 < 10


def test_occlusion_gain_is_paired_per_model_and_tests_the_claim(audit):
    from transferscope.analyses import occlusion

    res = occlusion.run(_with_roles(audit), **PLAN)
    ft = res.summary["fine-tuned"]
    # grey + a red overlay reads as 'bees' to the colour model: hiding the background fixes
    # 12 composites and breaks 12 others, on every background image alike - no gain
    # (5d2cc38 reported only "12 of 36 fixed")
    assert (ft["fixed"], ft["broken"]) == (12, 12)
    g = ft["gain"]["difference"]
    assert (g["value"], g["lo"], g["hi"], g["n"]) == (0.0, 0.0, 0.0, 9)
    assert g["unit"] == "background image" and ft["intervals"]["fixed"]["n"] == 9
    f = get_analysis("occlusion").finding(res)
    assert [c.claim for c in f.checks] == ["001.occlusion"]
    assert f.checks[0].verdict is Verdict.CANNOT_TELL


def test_occlusion_gain_known_answer():
    from transferscope.analyses import occlusion
    from transferscope.analyses._base import AnalysisResult

    bg = np.repeat(np.arange(12), 5)
    before = np.tile([0, 0, 1, 1, 1], 12).astype(bool)
    after = np.tile([1, 0, 1, 1, 1], 12).astype(bool)  # one composite in 5 fixed
    g = occlusion.gain({"m": before}, {"m": after}, ["m"], bg)
    assert g["difference"]["value"] == pytest.approx(0.2) and g["difference"]["n"] == 12
    summary = {"m": {"wrong": 24, "fixed": 12, "broken": 0, "gain": g},
               "background_images": 12, "claim": {"fine_tuned": ["m"], "comparison": g}}
    f = get_analysis("occlusion").finding(AnalysisResult("occlusion", summary))
    assert f.checks[0].verdict is Verdict.AGREES and not f.caveat
    assert "m occluded is higher than m with background in accuracy by +0.200" in f.text


def test_no_claims_without_model_roles(audit):
    from transferscope.analyses import composites, occlusion

    for mod in (composites, occlusion):
        res = mod.run(audit, **PLAN)
        assert "claim" not in res.summary
        assert get_analysis(mod.__name__.rsplit(".", 1)[1]).finding(res).checks == ()

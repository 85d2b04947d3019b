"""Remedies for lingering memories: known answers for each piece, runs on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_image
from transferscope.engine import TrainConfig, get_recipe, train
from transferscope.errors import ConfigError
from transferscope.models import create_model
from transferscope.remedies import REMEDIES, fine_tune, make_remedy
from transferscope.remedies._shared import BackgroundBank, paste, split_source_classes
from transferscope.remedies.pruning import selectivity
from transferscope.analyses.remedies import summarise
from transferscope.studies.remedies import STANDARD


@pytest.fixture
def source_folder(tmp_path):
    """Flat ImageNet-named source images: one per class for the first 60 classes."""
    from transferscope.data.imagenet import imagenet_wnids

    rng = np.random.default_rng(3)
    root = tmp_path / "src"
    for c, wnid in enumerate(imagenet_wnids()[:60]):
        write_image(root / f"{wnid}_c{c}.JPEG", tuple(int(v) for v in rng.integers(0, 255, 3)))
    return root


def _config(root, init="imagenet", epochs=1):
    return TrainConfig(arch="efficientnet_lite0", init=init, data=str(root),
                       recipe=get_recipe("quick", epochs=epochs, image_size=32, batch_size=8))


def test_paste_puts_the_shrunk_overlay_in_its_box_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    bg, ov = torch.zeros(3, 3, 20, 20), torch.ones(3, 3, 20, 20) * 2
    out, boxes = paste(bg, ov, (0.5, 0.5), g)
    for i in range(3):
        x0, y0, x1, y1 = boxes[i].tolist()
        assert x1 - x0 == y1 - y0 == 10 and 0 <= x0 <= 10 and 0 <= y0 <= 10
        inside = torch.zeros(20, 20, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.allclose(out[i][:, inside], torch.tensor(2.0))
        assert (out[i][:, ~inside] == 0).all()
    again, boxes2 = paste(bg, ov, (0.5, 0.5), torch.Generator().manual_seed(0))
    assert torch.equal(again, out) and torch.equal(boxes2, boxes)


def test_source_halves_are_disjoint_complete_and_seeded():
    a, b = split_source_classes(1000, seed=0)
    assert len(a) == len(b) == 500 and not set(a) & set(b) and set(a) | set(b) == set(range(1000))
    assert split_source_classes(1000, 0) == (a, b) and split_source_classes(1000, 1)[0] != a


def test_selectivity_known_answer():
    f_l = torch.tensor([[2.0, 0.0], [4.0, 0.0]])
    f_t = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    sel = selectivity(f_l, f_t)
    std = torch.cat([f_l, f_t]).std(0)
    assert torch.allclose(sel, torch.tensor([2.0, -1.0]) / (std + 1e-8))
    assert sel[0] > 0 > sel[1]


def test_activation_l1_and_composite_batch_known_answers():
    l1 = make_remedy("activation-l1", weight=0.5)
    f = torch.tensor([[1.0, -3.0], [0.0, 2.0]])
    assert l1.loss(None, None, None, f, None, None).item() == pytest.approx(0.5 * 6 / 4)
    aug = make_remedy("composite-augmentation", fraction=0.5, side=(0.5, 0.5))
    aug.bank = BackgroundBank(torch.full((4, 3, 8, 8), -1.0), torch.arange(4))
    x, y = torch.ones(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    x2, y2 = aug.batch(x, y, torch.Generator().manual_seed(0))
    changed = (x2 != x).flatten(1).any(1)
    assert int(changed.sum()) == 3 and torch.equal(y2, y)  # half replaced, labels kept
    for i in torch.nonzero(changed).flatten():
        assert int((x2[i] == -1).sum()) == 3 * (64 - 16)  # background outside a 4x4 overlay
    assert torch.equal(x, torch.ones(6, 3, 8, 8))  # the input batch is not modified


def test_lingering_suppression_loss_is_source_head_mass_and_trains_only_the_backbone():
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, image_size=32)
    rem = make_remedy("lingering-suppression", weight=2.0, fraction=1.0, side=(0.5, 0.5))
    src = create_model("efficientnet_lite0", 1000, image_size=32)
    rem.head = src.head.requires_grad_(False).eval()
    rem.penalised = torch.tensor([3, 7, 11])
    rem.bank = BackgroundBank(torch.randn(5, 3, 32, 32), torch.arange(5))
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    loss = rem.loss(model, x, None, None, None, torch.Generator().manual_seed(1))
    comp = rem.bank.composites(x, (0.5, 0.5), torch.Generator().manual_seed(1))
    want = 2.0 * src.head(model.forward_features(comp)).softmax(1)[:, [3, 7, 11]].sum(1).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in src.head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_summarise_verdicts_known_answer():
    rows = []
    for seed, (c_std, a_std, c_r, a_r) in enumerate([(0.90, 0.20, 0.90, 0.40),
                                                     (0.92, 0.22, 0.91, 0.44)]):
        rows += [{"variant": STANDARD, "seed": seed, "clean": c_std, "against": a_std,
                  "neutral": 0.5, "biased": 10, "distraction": 0.3, "cost": 60.0},
                 {"variant": "good", "seed": seed, "clean": c_r, "against": a_r,
                  "neutral": 0.5, "biased": 8, "distraction": 0.2, "cost": 70.0},
                 {"variant": "costly", "seed": seed, "clean": c_r - 0.1, "against": a_r,
                  "neutral": 0.5, "biased": 8, "distraction": 0.2, "cost": 70.0}]
    table, verdicts = summarise(pd.DataFrame(rows))
    assert verdicts["good"]["counts"] and verdicts["good"]["delta_against"] == pytest.approx(0.21)
    assert not verdicts["costly"]["counts"] and verdicts["costly"]["lowers_interference"]
    assert table.set_index("variant").loc["good", "counts"] == "yes"


def test_summarise_pairs_runs_by_seed():
    """Seeds that differ a lot (0.2 vs 0.6) but a remedy that adds 0.05 to each counts;
    one whose rise flips sign from seed to seed does not."""
    rows = []
    for seed, (a_std, a_steady, a_noisy) in enumerate([(0.2, 0.25, 0.5), (0.6, 0.65, 0.4)]):
        for variant, a in ((STANDARD, a_std), ("steady", a_steady), ("noisy", a_noisy)):
            rows.append({"variant": variant, "seed": seed, "clean": 0.9, "against": a,
                         "neutral": 0.5, "biased": 10, "distraction": 0.3, "cost": 60.0})
    _, verdicts = summarise(pd.DataFrame(rows))
    assert verdicts["steady"]["counts"]
    assert verdicts["steady"]["delta_against"] == pytest.approx(0.05)
    assert verdicts["steady"]["delta_against_std"] == pytest.approx(0.0, abs=1e-12)
    assert verdicts["noisy"]["delta_against"] == pytest.approx(0.05)
    assert not verdicts["noisy"]["counts"]  # +0.3 and -0.2: std 0.35 > 0.05


@pytest.mark.parametrize("kind", sorted(REMEDIES))
def test_every_remedy_fine_tunes_and_records_its_settings(kind, tiny_split, source_folder,
                                                          tmp_path):
    cfg = _config(tiny_split)
    if kind == "pruning":  # starts from a fine-tuned model
        train(cfg, tmp_path / "std")
        cfg = cfg.model_copy(update={"init": str(tmp_path / "std" / "model.safetensors")})
    rem = make_remedy(kind, source=str(source_folder), source_split="all",
                      **({"p_lo": 0.0} if kind == "pruning" else {}))
    res = fine_tune(cfg, tmp_path / kind, rem)
    saved = json.loads((tmp_path / kind / "config.json").read_text())["config"]["remedy"]
    assert saved["kind"] == kind and saved["source"] == str(source_folder)
    assert np.isfinite(res.metrics[-1]["train_loss"])
    if kind == "pruning":
        k = round(0.05 * res.model.num_features)
        assert rem.report["pruned"] == k and int((res.model.feature_mask == 0).sum()) == k
        f = res.model.eval().forward_features(torch.randn(2, 3, 32, 32))
        assert (f[:, res.model.feature_mask == 0] == 0).all()  # still pruned after tuning
    other = make_remedy(kind, source=str(source_folder), source_split="all", split_seed=5)
    with pytest.raises(ConfigError, match="other settings"):
        fine_tune(cfg, tmp_path / kind, other, resume=True)


def test_a_remedy_run_without_its_hook_is_refused(tiny_split, tmp_path):
    cfg = _config(tiny_split).model_copy(update={"remedy": {"kind": "activation-l1"}})
    with pytest.raises(ConfigError, match="remedies"):
        train(cfg, tmp_path / "r")
    with pytest.raises(ConfigError, match="unknown remedy"):
        make_remedy("dropout-everything")


@pytest.mark.slow
def test_remedy_study_end_to_end_on_held_out_halves(tiny_split, source_folder, tmp_path):
    """Two seeds x (standard, pruning) on tiny data: one row per run,
    paired verdicts, backgrounds from the mean bias of the standard runs, and evaluation
    composites only on source classes that training never saw."""
    from transferscope.studies.kinds import run_kind
    from transferscope.studies.run import load_any

    out = tmp_path / "study"
    study = tmp_path / "remedies.toml"  # through the study file, as `transferscope audit` runs it
    study.write_text(f'kind = "remedies"\ntarget = "{tiny_split}"\nepochs = 1\nimage_size = 32\n'
                     f'seeds = [0, 1]\nvariants = ["pruning", "{STANDARD}"]\n'
                     f'source = "{source_folder}"\nviews = 1\nbatch_size = 8\n'
                     '[composites]\nstyle = "paper001"\nn_biased = 1\n'
                     'overlays_per_class = 2\nrepeats = 1\n')
    output = run_kind(load_any(study), out)
    res = output.results["remedies"]
    assert output.report is not None and output.report.is_file()
    per_run = res.tables["per_run"]
    assert sorted(per_run["run"]) == sorted(f"{v}-s{s}" for v in
                                            ("standard", "pruning") for s in (0, 1))
    assert per_run["clean"].between(0, 1).all() and (per_run["cost"] > 0).all()
    assert set(res.summary["verdicts"]) == {"pruning"}
    assert all(v["paired_seeds"] == 2 for v in res.summary["verdicts"].values())
    comp = json.loads((out / "audit" / "results" / "composites.json").read_text())
    assert comp["summary"]["reference_model"] == "mean of standard-s0, standard-s1"
    train_half, _ = split_source_classes(1000, 0)
    used = set(pd.read_csv(out / "audit" / "results" / "composites__per_background.csv")
               ["background class"])
    assert used and not used & set(train_half)
    saved = json.loads((out / "runs" / "pruning-s1" / "config.json").read_text())
    assert saved["config"]["recipe"]["batch_size"] == 8  # overrides reach the pruning stage
    assert saved["config"]["recipe"]["lr"] == pytest.approx(
        json.loads((out / "runs" / "standard-s1" / "config.json").read_text())
        ["config"]["recipe"]["lr"] * 0.1)
    assert (out / "results" / "remedies.json").is_file() and (out / "remedies_runs.json").is_file()


def test_unknown_remedy_settings_fail_before_training(tmp_path):
    from transferscope.cli.studies import _remedy_params
    from transferscope.studies.remedies import run_remedy_study

    with pytest.raises(ConfigError, match="no setting 'fractoin'.*fraction"):
        make_remedy("composite-augmentation", fractoin=0.3)
    assert make_remedy("composite-augmentation", fraction=0.25).settings["fraction"] == 0.25
    assert _remedy_params(["composite-augmentation.fraction=0.25", "pruning.p_lo=null",
                           "activation-l1.weight=1e-2"]) == {
        "composite-augmentation": {"fraction": 0.25}, "pruning": {"p_lo": None},
        "activation-l1": {"weight": 0.01}}
    with pytest.raises(ConfigError, match="KIND.KEY=VALUE"):
        _remedy_params(["fraction=0.25"])
    with pytest.raises(ConfigError, match="not among the variants"):
        run_remedy_study("nowhere", tmp_path, variants=["standard"],
                         remedy_params={"pruning": {"fraction": 0.1}})
    with pytest.raises(ConfigError, match="no setting"):
        run_remedy_study("nowhere", tmp_path, variants=["standard", "pruning"],
                         remedy_params={"pruning": {"fractoin": 0.1}})
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_report_names_what_each_remedy_did():
    from transferscope.analyses._base import AnalysisResult
    from transferscope.report import findings

    def v(counts, lowers, d, sd):
        return {"counts": counts, "lowers_interference": lowers, "delta_against": d,
                "delta_against_std": sd, "delta_clean": -0.005}
    res = AnalysisResult("remedies", {"verdicts": {
        "a": v(True, True, 0.1, 0.02), "b": v(False, True, 0.3, 0.1),
        "c": v(False, False, -0.2, 0.05), "d": v(False, False, 0.01, 0.1)}}, {})
    text = next(f.text for f in findings({"remedies": res}) if "Remedies" in f.text)
    assert "a counts (against +10.0 ± 2.0 pts" in text
    assert "b lowers interference but costs clean accuracy" in text
    assert "c raises interference" in text and "d does not count" in text

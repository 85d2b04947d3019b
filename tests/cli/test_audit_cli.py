"""The memory audit end to end through the CLI on tiny data: files written, cache shared."""

from __future__ import annotations

import json

import pytest

from conftest import write_image
from transferscope.analyses import list_analyses
from transferscope.cli import main
from transferscope.engine import TrainConfig, get_recipe, train

COLOURS = {"n01440764": (200, 40, 40), "n01443537": (40, 200, 40), "n01484850": (40, 40, 200),
           "n01491361": (200, 200, 40)}


@pytest.fixture
def runs(tiny_split, tmp_path):
    for wnid, rgb in COLOURS.items():
        for i in range(2):
            write_image(tmp_path / "src" / f"{wnid}_{i}.JPEG", rgb, size=(48, 40))
    ft = TrainConfig(arch="efficientnet_lite0", init="imagenet", data=str(tiny_split),
                     recipe=get_recipe("quick", epochs=1, image_size=32, batch_size=8))
    train(ft, tmp_path / "ft")
    sc = TrainConfig(arch="baseline_cnn", init="random", data=str(tiny_split),
                     recipe=get_recipe("paper000-scratch", epochs=1, image_size=32, batch_size=8))
    train(sc, tmp_path / "scratch")
    return tiny_split, tmp_path


def _audit(tiny_split, tmp_path, out):
    return main(["audit-memory", "--model", f"fine-tuned={tmp_path / 'ft'}",
                 "--model", f"scratch={tmp_path / 'scratch'}", "--out", str(out),
                 "--target", str(tiny_split), "--source-images", str(tmp_path / "src"),
                 "--views", "2", "--image-size", "32", "--overlays-per-class", "2",
                 "--repeats", "1"])


def test_audit_memory_cli_writes_every_analysis_and_reruns_from_cache(runs, tmp_path):
    tiny_split, root = runs
    assert _audit(tiny_split, root, tmp_path / "audit") == 0
    results = tmp_path / "audit" / "results"
    for name in list_analyses("memory"):
        assert (results / f"{name}.json").exists(), name
    assert list((tmp_path / "audit" / "figures").glob("*.png"))
    stats = json.loads((tmp_path / "audit" / "run_stats.json").read_text())
    assert stats["cache"]["misses"] > 0
    bias = json.loads((results / "interference_bias.json").read_text())
    assert "samples" not in bias["summary"] and any("fine-tuned" in k for k in bias["summary"])
    assert _audit(tiny_split, root, tmp_path / "again") == 0
    again = json.loads((tmp_path / "again" / "run_stats.json").read_text())
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] > 0
    first = json.loads((results / "lingering_features.json").read_text())
    second = json.loads((tmp_path / "again" / "results" / "lingering_features.json").read_text())
    assert first == second


def test_audit_memory_names_a_bad_model_spec(runs, tmp_path, capsys):
    tiny_split, root = runs
    code = main(["audit-memory", "--model", str(root / "ft"), "--out", str(tmp_path / "x"),
                 "--target", str(tiny_split), "--source-images", str(root / "src")])
    assert code == 2 and "NAME=RUN_DIR" in capsys.readouterr().err


def test_audit_memory_rejects_folder_without_imagenet_names(runs, tmp_path, capsys):
    tiny_split, root = runs
    code = main(["audit-memory", "--model", f"ft={root / 'ft'}", "--out", str(tmp_path / "x"),
                 "--target", str(tiny_split), "--source-images", str(tiny_split / "train")])
    assert code == 2 and "ImageNet class" in capsys.readouterr().err


def test_guard_reads_what_audit_memory_writes(runs, tmp_path, capsys):
    """Issue 27, item 1: `guard --study OUT` on an audit-memory folder said "study file not
    found"; audit-memory now writes OUT/study.toml (models by path) like a study."""
    from transferscope.report import Report

    tiny_split, root = runs
    out = tmp_path / "audit"
    assert _audit(tiny_split, root, out) == 0
    assert (out / "study.toml").exists()
    capsys.readouterr()
    img_dir = tiny_split / "val" / "ants"
    assert main(["guard", "--study", str(out), str(img_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "threshold" in lines[0] and len(lines) == 1 + len(list(img_dir.iterdir()))
    assert Report.from_dir(out).findings()


def test_a_missing_run_directory_is_named(runs, tmp_path, capsys):
    tiny_split, root = runs
    code = main(["audit-memory", "--model", "ft=runs/nothere", "--out", str(tmp_path / "x"),
                 "--target", str(tiny_split), "--source-images", str(root / "src")])
    err = capsys.readouterr().err
    assert code == 2 and "runs/nothere: no such run directory or model file" in err
    assert "unknown model" not in err


def test_the_audit_size_comes_from_the_trained_model(runs, tmp_path, capsys):
    """Issue 27, item 3: a model trained at 32 px was audited at 224 px by default."""
    from transferscope.cli.audits import audit_size, trained_size

    tiny_split, root = runs
    assert trained_size(root / "ft") == 32 and trained_size(root / "nothere") is None
    assert audit_size(None, {"ft": str(root / "ft")}) == 32
    assert audit_size(None, {"w": str(root / "ft" / "model.safetensors")}) == 32  # recorded
    assert audit_size(None, {"n": str(root / "nothere.safetensors")}) == 224
    assert audit_size(64, {"ft": str(root / "ft")}) == 64
    assert "trained at ft 32 px" in capsys.readouterr().err
    out = tmp_path / "sized"
    assert main(["audit-memory", "--model", f"fine-tuned={root / 'ft'}", "--out", str(out),
                 "--target", str(tiny_split), "--source-images", str(root / "src"),
                 "--views", "2", "--overlays-per-class", "2", "--repeats", "1",
                 "--analyses", "retained_knowledge"]) == 0
    assert "image_size = 32" in (out / "study.toml").read_text()


def test_one_call_python_audit_writes_what_the_cli_writes(runs, tmp_path, capsys):
    """Issue 27: ``from transferscope import audit`` on an nn.Module - the same output folder
    and numbers as ``audit-memory`` on the run directory, accepted by ``guard``."""
    from transferscope import audit
    from transferscope.engine import load_run

    tiny_split, root = runs
    common = dict(source_images=[str(root / "src")], views=2,
                  composites={"overlays_per_class": 2, "repeats": 1},
                  analyses=["retained_knowledge", "lingering_features"])
    report = audit(load_run(root / "ft"), str(tiny_split), out=tmp_path / "py",
                   name="fine-tuned", **common)
    assert (tmp_path / "py" / "models" / "fine-tuned.safetensors").is_file()
    texts = [str(f) for f in report.findings()]
    assert texts[0].startswith("Retained knowledge:") and "fine-tuned" in texts[0]
    assert main(["audit-memory", "--model", f"fine-tuned={root / 'ft'}", "--out",
                 str(tmp_path / "cli"), "--target", str(tiny_split), "--source-images",
                 str(root / "src"), "--views", "2", "--overlays-per-class", "2", "--repeats",
                 "1", "--analyses", "retained_knowledge,lingering_features"]) == 0
    for name in ("retained_knowledge", "lingering_features"):
        py = json.loads((tmp_path / "py" / "results" / f"{name}.json").read_text())
        cli = json.loads((tmp_path / "cli" / "results" / f"{name}.json").read_text())
        assert py["summary"] == cli["summary"], name
    img = next((tiny_split / "val").rglob("*.jpg"))
    capsys.readouterr()
    assert main(["guard", "--study", str(tmp_path / "py"), str(img)]) == 0
    assert img.name in capsys.readouterr().out

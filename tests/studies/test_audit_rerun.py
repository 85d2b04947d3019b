"""An ``audit-memory`` folder reruns to the same numbers: the audit counts the source votes
v(c) (paper 001, eq. 1) on the target's training split, as the study its ``study.toml``
describes (and ``guard``'s detector) does. Before, audit-memory counted the validation split
and a rerun of its own folder found other lingering classes."""

from __future__ import annotations

from conftest import write_image
from transferscope.cli import main

COLOURS = {"n01440764": (200, 40, 40), "n01443537": (40, 200, 40), "n01484850": (40, 40, 200),
           "n01491361": (200, 200, 40)}


def test_an_audit_memory_folder_reruns_to_the_same_lingering_features(tiny_split, tmp_path):
    from transferscope import create_model
    from transferscope.models import save_model

    for wnid, rgb in COLOURS.items():
        for i in range(2):
            write_image(tmp_path / "src" / f"{wnid}_{i}.JPEG", rgb, size=(48, 40))
    save_model(create_model("efficientnet_lite0", 2, init="imagenet"), tmp_path / "ft.safetensors")
    out = tmp_path / "audit"
    assert main(["audit-memory", "--model", f"fine-tuned={tmp_path / 'ft.safetensors'}",
                 "--target", str(tiny_split), "--out", str(out), "--analyses",
                 "lingering_features", "--image-size", "32", "--source-images",
                 str(tmp_path / "src"), "--views", "2"]) == 0
    assert 'train_split = "train"' in (out / "study.toml").read_text()
    first = (out / "results" / "lingering_features.json").read_text()
    n_train = sum(1 for p in (tiny_split / "train").rglob("*") if p.is_file())
    assert f"v(c) counts target training images ({n_train})" in first
    assert main(["audit", str(out / "study.toml"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results" / "lingering_features.json").read_text() == first


def test_the_split_counted_is_the_one_a_study_counts(tiny_split, tmp_path):
    """As a study: a folder with the split gives it, a flat folder gives itself (the folder
    rule of image_folder), data without it gives None (then the audited split is counted)."""
    from transferscope.studies.audit_memory import _split_or_none

    assert _split_or_none(str(tiny_split), "train", None).root == tiny_split / "train"
    assert _split_or_none(str(tiny_split / "val"), "train", None).root == tiny_split / "val"
    assert _split_or_none(str(tmp_path / "nothing"), "train", None) is None

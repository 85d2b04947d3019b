from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image
from transferscope import config
from transferscope.data import (LITE_NORM, eval_transform, image_folder, imagenet_names,
                                imagenet_wnids, load_rgb, parse_wnid, source_images,
                                wnid_to_index)
from transferscope.data.fetch import fetch
from transferscope.errors import DataError


def test_image_folder_labels_and_digest(tiny_folder):
    ds = image_folder(tiny_folder)
    assert ds.classes == ["ants", "bees"]
    assert len(ds) == 12 and ds.class_counts() == [6, 6]
    assert [s.label for s in ds.samples] == [0] * 6 + [1] * 6
    assert ds.digest == image_folder(tiny_folder).digest
    ds = ds.with_transform(eval_transform(LITE_NORM, 32))
    x, y = ds[7]
    assert x.shape == (3, 32, 32) and y == 1


def test_digest_changes_with_content(tiny_folder):
    before = image_folder(tiny_folder).digest
    write_image(tiny_folder / "ants" / "ants_0.jpg", (1, 2, 3))
    assert image_folder(tiny_folder).digest != before


def test_bad_files_are_skipped_with_path(tiny_folder):
    (tiny_folder / "ants" / "notes.jpg").write_text("this is not an image")
    good = (tiny_folder / "bees" / "bees_0.jpg").read_bytes()
    (tiny_folder / "bees" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tiny_folder / "bees" / "readme.txt").write_text("hello")
    write_image(tiny_folder / "bees" / "one.png", (9, 9, 9), size=(1, 1))
    ds = image_folder(tiny_folder)
    assert len(ds) == 12
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert set(reasons) == {"notes.jpg", "truncated.jpg", "readme.txt", "one.png"}
    assert "extension" in reasons["readme.txt"] and "too small" in reasons["one.png"]


def test_a_first_scan_on_threads_matches_one_by_one(tmp_path, monkeypatch):
    """Files not indexed yet are checked on a thread per core: same samples, hashes, skipped
    files and order as checking them one at a time (the threads decode out of order)."""
    import transferscope.data.file_index as file_index

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    for c in ("a", "b"):
        for i in range(40):  # 80 new files: over SCAN_THREADS_MIN_FILES
            write_image(tmp_path / "set" / c / f"{i:02d}.jpg", (i * 6, 3 * (c == "b"), 7))
    good = (tmp_path / "set" / "a" / "00.jpg").read_bytes()
    (tmp_path / "set" / "a" / "05.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "set" / "b" / "17.jpg").write_text("not an image")
    calls, real = [], file_index.FileIndex.compute

    def compute(self, *args):  # as slow as a photo (tiny files: one thread keeps up alone)
        calls.append(threading.get_ident())
        time.sleep(0.005)
        return real(self, *args)

    monkeypatch.setattr(file_index.FileIndex, "compute", compute)
    monkeypatch.setenv("TRANSFERSCOPE_CACHE", str(tmp_path / "cache-threads"))
    threaded = image_folder(tmp_path / "set")
    assert len(calls) == 80 and len(set(calls)) > 1  # hashed and decoded on several threads
    monkeypatch.setattr(file_index, "SCAN_THREADS_MIN_FILES", 10**9)
    monkeypatch.setenv("TRANSFERSCOPE_CACHE", str(tmp_path / "cache-serial"))
    serial = image_folder(tmp_path / "set")
    assert threaded.samples == serial.samples and len(serial) == 78
    assert threaded.skipped == serial.skipped
    assert [Path(s.path).name for s in serial.skipped] == ["05.jpg", "17.jpg"]
    calls.clear()
    monkeypatch.setenv("TRANSFERSCOPE_CACHE", str(tmp_path / "cache-threads"))
    assert image_folder(tmp_path / "set").samples == serial.samples and calls == []  # indexed


@pytest.mark.parametrize("cpus", [1, 3])
def test_an_interrupted_first_scan_keeps_what_it_checked(tmp_path, monkeypatch, cpus):
    """Ctrl-C in the middle of a scan (one by one, or on threads): the files checked so far
    are indexed, the next scan checks only the rest."""
    import transferscope.data.file_index as file_index

    for i in range(70):
        write_image(tmp_path / "set" / "a" / f"{i:02d}.png", (i, 0, 0))
    monkeypatch.setenv("TRANSFERSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)),
                        raising=False)
    calls, real, interrupted = [], file_index.FileIndex.compute, []

    def compute(self, *args):
        calls.append(args[0])
        if len(calls) == 31 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(file_index.FileIndex, "compute", compute)
    with pytest.raises(KeyboardInterrupt):
        image_folder(tmp_path / "set")
    calls.clear()
    assert len(image_folder(tmp_path / "set")) == 70
    if cpus == 1:
        assert len(calls) == 40  # 30 were kept; the interrupted one and the 39 after it remain
    else:  # threads finish the files they had started; the interrupted one remains
        assert 1 <= len(calls) <= 40


def test_empty_class_is_a_clear_error_or_skipped(tiny_folder):
    (tiny_folder / "wasps").mkdir()
    with pytest.raises(DataError, match="wasps"):
        image_folder(tiny_folder)
    ds = image_folder(tiny_folder, empty_classes="skip")
    assert ds.classes == ["ants", "bees"]
    assert any("wasps" in s.path for s in ds.skipped)


def test_missing_folder_names_the_data_root(tmp_path):
    with pytest.raises(DataError, match="--data-root"):
        image_folder("no-such-set", data_root=tmp_path)


def test_symlink_loop_does_not_hang(tiny_folder):
    os.symlink(tiny_folder / "ants", tiny_folder / "ants" / "loop")
    assert image_folder(tiny_folder).class_counts() == [6, 6]


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_load_rgb_converts_every_mode(tmp_path, mode):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(path)
    elif mode == "CMYK":
        write_image(path.with_suffix(".jpg"), (10, 200, 30), mode="CMYK")
        path = path.with_suffix(".jpg")
    else:
        write_image(path, (10, 200, 30), mode=mode)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size[0] > 0
    if mode == "I;16":
        assert np.asarray(img).min() == 255  # full-scale 16-bit maps to full-scale 8-bit


def test_imagenet_tables():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    assert wnid_to_index()["n01440764"] == 0 and imagenet_names()[0] == "tench"
    assert parse_wnid("n01443537_goldfish.JPEG") == "n01443537"
    assert parse_wnid("goldfish.jpg") is None


def test_source_images_flat_folders_and_names(tmp_path):
    write_image(tmp_path / "flat" / "n01443537_goldfish.JPEG", (1, 100, 200))
    write_image(tmp_path / "flat" / "n01440764_tench.JPEG", (1, 100, 200))
    write_image(tmp_path / "flat" / "holiday.jpg", (1, 100, 200))
    ds = source_images(tmp_path / "flat")
    assert [s.label for s in ds.samples] == [0, 1]
    assert ds.label_space == "imagenet" and ds.num_classes == 1000
    assert any("holiday" in s.path for s in ds.skipped)
    write_image(tmp_path / "tree" / "n01443537" / "a.jpg", (1, 2, 3))
    write_image(tmp_path / "tree" / "tench" / "b.jpg", (1, 2, 3))
    assert sorted(s.label for s in source_images(tmp_path / "tree").samples) == [0, 1]


def test_source_images_with_no_imagenet_names_is_an_error(tiny_folder):
    with pytest.raises(DataError, match="wnid"):
        source_images(tiny_folder)


def test_lite_normalisation_is_x_minus_127_over_128(tmp_path):
    path = write_image(tmp_path / "x.png", (0, 127, 255), size=(16, 16))
    x = eval_transform(LITE_NORM, 16)(load_rgb(path))
    assert x[1, 12, 12].item() == pytest.approx(0.0, abs=1e-6)  # 127 -> 0
    assert x.max().item() == pytest.approx((255 - 127) / 128, abs=1e-5)
    assert x.min().item() == pytest.approx(-127 / 128, abs=1e-5)


def test_data_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "env"))
    assert config.data_root(tmp_path / "cli") == tmp_path / "cli"
    assert config.data_root() == tmp_path / "env"
    monkeypatch.delenv(config.DATA_ENV)
    monkeypatch.chdir(tmp_path)
    assert config.data_root() == config.default_home() / "data"


def test_fetch_fails_fast_without_network(tmp_path):
    import time

    t0 = time.perf_counter()
    with pytest.raises(DataError, match="could not download"):
        fetch("hymenoptera", tmp_path, url="http://127.0.0.1:9/none.zip", timeout=2)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(DataError, match="no download is known"):
        fetch("imagenet-21k", tmp_path)


@pytest.mark.shared_data
def test_shared_sets_match_their_source_counts(data_root):
    assert image_folder("hymenoptera", "train", data_root=data_root).class_counts() == [123, 121]
    assert image_folder("hymenoptera", "val", data_root=data_root).class_counts() == [70, 83]
    samples = source_images("imagenet-samples", data_root=data_root)
    assert len(samples) == 1000 and sorted(s.label for s in samples.samples) == list(range(1000))
    nette = source_images("imagenette", "val", data_root=data_root)
    assert len(nette) == 500 and sum(c > 0 for c in nette.class_counts()) == 10

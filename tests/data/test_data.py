from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_image
from transferscope import config
from transferscope.data import (IMAGENET_NORM, LITE_NORM, eval_transform, image_folder, imagenet_names,
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


def _jpeg_variants(tmp_path) -> dict[str, Path]:
    """Textured JPEGs in every layout the tensor decoder may meet, plus files it must leave
    to PIL (CMYK, PNG)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:75, 0:100]
    arr = np.stack([xx * 2.5, yy * 3.4, (xx + yy) * 1.4], -1) + rng.normal(0, 20, (75, 100, 3))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    out = {}
    for name, mode, kw in (("420", "RGB", {"subsampling": 2}), ("422", "RGB", {"subsampling": 1}),
                           ("444", "RGB", {"subsampling": 0, "quality": 95}),
                           ("progressive", "RGB", {"progressive": True}),
                           ("grey", "L", {}), ("cmyk", "CMYK", {})):
        out[name] = tmp_path / f"{name}.jpg"
        img.convert(mode).save(out[name], "JPEG", **kw)
    out["png"] = tmp_path / "png.png"
    img.save(out["png"])
    return out


def test_jpegs_decode_straight_to_tensors_pixel_for_pixel(tmp_path, monkeypatch):
    """``load_rgb_tensor`` equals ``PILToTensor(load_rgb(...))`` for every layout; plain
    JPEGs skip PIL (TorchCodec), CMYK, PNG, draft-decoded and corrupt ones do not."""
    import transferscope.data.images as images
    from torchvision.transforms import v2

    if sys.platform == "linux":  # a declared dependency there: it must load
        assert images.jpeg_decoder() is not None
    elif images.jpeg_decoder() is None:
        pytest.skip("TorchCodec is not installed here")
    by_pil = []
    real = images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda *a: by_pil.append(1) or real(*a))
    for name, path in _jpeg_variants(tmp_path).items():
        by_pil.clear()
        fast = images.load_rgb_tensor(path)
        assert fast.dtype == torch.uint8 and fast.shape == (3, 75, 100)
        assert torch.equal(fast, v2.PILToTensor()(real(path))), name
        assert len(by_pil) == (name in ("cmyk", "png")), name
    path = _jpeg_variants(tmp_path)["420"]
    by_pil.clear()  # draft decoding (a resize to 30 px follows): PIL's scaled decoder
    draft = images.load_rgb_tensor(path, min_side=30)
    assert draft.shape == (3, 38, 50) and by_pil == [1]
    assert torch.equal(draft, v2.PILToTensor()(real(path, 30)))
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 75 - 1)  # too large: PIL downscales it
    assert images.load_rgb_tensor(path).shape == (3, 38, 50) and by_pil == [1, 1]
    monkeypatch.setattr(images, "MAX_PIXELS", 10**9)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(OSError, match="truncated"):  # the same error as PIL's
        images.load_rgb_tensor(truncated)


def test_an_image_set_gives_the_same_inputs_through_either_decoder(tmp_path, data_root):
    """The model inputs of an ImageSet (eval transform, tensor decoding) equal the
    transform applied to the PIL image, on the synthetic variants and real photos."""
    from transferscope.data.transforms import takes_uint8_tensor

    for name, path in _jpeg_variants(tmp_path).items():
        write_image(tmp_path / "set" / "c" / "x.png", (1, 2, 3))
        (tmp_path / "set" / "c" / path.name).write_bytes(path.read_bytes())
    real = image_folder(data_root / "hymenoptera", "val").subset(range(0, 150, 15))
    for ds in (image_folder(tmp_path / "set"), real):
        for t in (eval_transform(LITE_NORM, 64), eval_transform(IMAGENET_NORM, 224)):
            assert takes_uint8_tensor(t)
            tds = ds.with_transform(t)
            for i in range(len(ds)):
                assert torch.equal(tds[i][0], t(ds.load_image(i))), ds.samples[i].path
    assert not takes_uint8_tensor(lambda img: img) and not takes_uint8_tensor(None)


def test_a_file_broken_after_the_scan_is_one_clear_error(tiny_folder):
    """Either decoder: a DataError naming the file and saying to re-scan, not a traceback."""
    ds = image_folder(tiny_folder).with_transform(eval_transform(LITE_NORM, 16))
    broken = ds.root / ds.samples[0].path
    broken.write_bytes(b"not an image any more")
    for read in (lambda: ds[0], lambda: ds.load_image(0), lambda: ds.load_tensor(0)):
        with pytest.raises(DataError, match="could not be read any more.*re-scan") as err:
            read()
        assert str(broken) in str(err.value)


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

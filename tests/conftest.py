"""Shared fixtures: an isolated cache per test, tiny synthetic image folders, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    env = os.environ.get("TRANSFERSCOPE_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "hymenoptera").is_dir():
            return cand
    return None


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRANSFERSCOPE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("TRANSFERSCOPE_PROGRESS", "0")
    import transferscope.engine.inference as inf

    monkeypatch.setattr(inf, "_default_cache", None)


@pytest.fixture
def data_root():
    root = shared_data_root()
    if root is None:
        pytest.skip("shared data sets not found (set TRANSFERSCOPE_DATA)")
    return root


def write_image(path: Path, rgb, size=(40, 32), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[...] = rgb
    arr[: size[1] // 2, : size[0] // 2] = 255 - np.asarray(rgb, dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def make_folder(root: Path, classes=("ants", "bees"), per_class=6, seed=0, size=(40, 32)):
    """A tiny ImageFolder whose classes differ in colour (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    base = {0: (200, 40, 40), 1: (40, 40, 200), 2: (40, 200, 40)}
    for c, name in enumerate(classes):
        for i in range(per_class):
            jitter = rng.integers(-20, 20, size=3)
            rgb = tuple(int(v) for v in np.clip(np.array(base[c % 3]) + jitter, 0, 255))
            write_image(root / name / f"{name}_{i}.jpg", rgb, size)
    return root


@pytest.fixture
def tiny_folder(tmp_path) -> Path:
    return make_folder(tmp_path / "tiny")


@pytest.fixture
def tiny_split(tmp_path) -> Path:
    """``root/{train,val}/{ants,bees}`` with 8 train and 4 val images per class."""
    root = tmp_path / "tinyset"
    make_folder(root / "train", per_class=8, seed=1)
    make_folder(root / "val", per_class=4, seed=2)
    return root


@pytest.fixture(autouse=True)
def _close_figures():
    """Analyses called directly in tests return open figures (saving closes them)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")

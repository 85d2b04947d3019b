"""CSV data sets, torch Datasets and ImageNet validation layouts (tiny synthetic files)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from transferscope.data import (csv_set, from_dataset, image_folder, imagenet_val_labels,
                                source_images, wnid_to_index)
from transferscope.errors import DataError


def _img(path, colour=(10, 20, 30), size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def csv_data(tmp_path):
    for i in range(3):
        _img(tmp_path / "imgs" / f"ant{i}.png", (10 * i, 0, 0))
        _img(tmp_path / "imgs" / f"bee{i}.png", (0, 10 * i, 0))
    outside = _img(tmp_path.parent / f"{tmp_path.name}-far" / "bee9.png", (1, 2, 3))
    rows = ["path,label,split"]
    rows += [f"imgs/ant{i}.png,ant,{'val' if i == 2 else 'train'}" for i in range(3)]
    rows += [f"imgs/bee{i}.png,bee,{'val' if i == 2 else 'train'}" for i in range(3)]
    rows += [f"{outside},bee,train"]  # absolute path outside the CSV's folder
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "labels.csv"


def test_csv_splits_share_classes_and_paths_resolve(csv_data):
    train, val = image_folder(csv_data, "train"), image_folder(str(csv_data), "val")
    assert train.classes == val.classes == ["ant", "bee"]
    assert len(train) == 5 and len(val) == 2 and train.class_counts() == [2, 3]
    far = [i for i, smp in enumerate(train.samples) if smp.path.endswith("bee9.png")]
    x, y = train.with_transform(lambda im: torch.tensor(im.getpixel((0, 0))))[far[0]]
    assert y == 1 and x.tolist() == [1, 2, 3]  # the absolute path, outside the folder
    assert len(csv_set(csv_data)) == 7 and train.digest != val.digest
    assert csv_set(csv_data, "train").digest == train.digest  # stable


def test_csv_numeric_labels_sort_by_value(tmp_path):
    for i, lab in enumerate(["10", "2", "2"]):
        _img(tmp_path / f"{i}.png")
    (tmp_path / "l.csv").write_text("path,label\n0.png,10\n1.png,2\n2.png,2\n")
    ds = csv_set(tmp_path / "l.csv")
    assert ds.classes == ["2", "10"] and ds.class_counts() == [2, 1]


@pytest.mark.parametrize("body,msg", [
    ("file,label\na.png,x\n", "row 1 must be a header"),
    ("path,label\na.png\n", "row 2: 1 fields"),
    ("path,label\na.png,x\n,y\n", "row 3: empty path"),
    ("path,label\na.png,\n", "row 2: empty label"),
    ("path,label\nmissing.png,x\n", "row 2: image missing.png not found"),
    ("path,label\na.png,x\na.png,y\n", "row 3: a.png is listed twice"),
    ("path,label\nnotes.txt,x\n", "row 2: notes.txt is not an image"),
    ("path,label\n", "no data rows"),
])
def test_csv_malformed_rows_name_the_file_and_row(tmp_path, body, msg):
    _img(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "bad.csv").write_text(body)
    with pytest.raises(DataError, match=msg) as err:
        csv_set(tmp_path / "bad.csv")
    assert "bad.csv" in str(err.value) and "\n" not in str(err.value)


def test_csv_split_errors(tmp_path, csv_data):
    _img(tmp_path / "a.png")
    (tmp_path / "nosplit.csv").write_text("path,label\na.png,x\n")
    with pytest.raises(DataError, match="no 'split' column"):
        image_folder(tmp_path / "nosplit.csv", "train")
    with pytest.raises(DataError, match="no rows with split 'test'"):
        csv_set(csv_data, "test")


def test_corrupt_image_in_csv_is_skipped_and_listed(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    (tmp_path / "l.csv").write_text("path,label\na.png,x\nb.png,y\n")
    ds = csv_set(tmp_path / "l.csv")
    assert len(ds) == 1 and ds.classes == ["x", "y"]
    assert "row 3" in ds.skipped[0].reason


class _Toy(torch.utils.data.Dataset):
    classes = ["cat", "dog"]

    def __init__(self, n=4, shift=0):
        self.n, self.shift = n, shift

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        img = torch.full((3, 8, 8), (i + self.shift) / 10.0)
        return img, i % 2


def test_torch_dataset_is_an_image_set_with_a_content_digest():
    from transferscope.data.transforms import IMAGENET_NORM, eval_transform
    from transferscope.engine import ResultCache, predict
    from transferscope.models import create_model

    ds = from_dataset(_Toy())
    assert ds.classes == ["cat", "dog"] and ds.targets.tolist() == [0, 1, 0, 1]
    assert ds.digest == from_dataset(_Toy()).digest != from_dataset(_Toy(shift=1)).digest
    x, y = ds.with_transform(eval_transform(IMAGENET_NORM, 8))[3]
    assert x.shape == (3, 8, 8) and y == 1
    assert ds.load_image(3).getpixel((0, 0)) == (76, 76, 76)  # 0.3 * 255 = 76.49..
    m = create_model("baseline_cnn", 2, image_size=8)
    assert predict(m, ds, image_size=8, cache=ResultCache(enabled=False)).logits.shape == (4, 2)
    assert len(ds.subset([1, 2])) == 2 and ds.subset([1]).load_image(0).size == (8, 8)


def test_torch_dataset_errors():
    class NoClasses(_Toy):
        classes = None

    with pytest.raises(DataError, match="no 'classes'"):
        from_dataset(NoClasses())
    with pytest.raises(DataError, match="item 2: label 2 outside"):
        from_dataset([(torch.zeros(3, 4, 4), 0), (torch.zeros(3, 4, 4), 1),
                      (torch.zeros(3, 4, 4), 2)], classes=["a", "b"])


def test_imagenet_val_flat_with_kaggle_solution(tmp_path):
    val = tmp_path / "val"
    for i in (1, 2, 3):
        _img(val / f"ILSVRC2012_val_{i:08d}.JPEG", (i, i, i), (64, 64))
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n01751748 1 2 3 4 n01751748 5 6 7 8\n"
        "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000003,n09193705 1 2 3 4\n")
    ds = source_images(val)
    assert len(ds) == 3 and ds.label_space == "imagenet"
    assert ds.targets.tolist() == sorted([wnid_to_index()[w] for w in
                                          ("n01751748", "n01440764", "n09193705")]) or \
        sorted(ds.targets.tolist()) == sorted(wnid_to_index()[w] for w in
                                              ("n01751748", "n01440764", "n09193705"))
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,\n")
    with pytest.raises(DataError, match="LOC_val_solution.csv row 2"):
        source_images(val)


def test_imagenet_val_flat_with_devkit_ground_truth(tmp_path):
    import numpy as np
    from scipy.io import savemat

    val = tmp_path / "val"
    for i in (1, 2):
        _img(val / f"ILSVRC2012_val_{i:08d}.JPEG", (i, i, i), (64, 64))
    data = tmp_path / "devkit" / "data"
    data.mkdir(parents=True)
    # devkit IDs are not wnid-sorted indices: ID 1 is n02119789 (kit fox), ID 2 n02100735
    synsets = np.zeros(3, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    synsets[0] = (1, "n02119789", 0)
    synsets[1] = (2, "n02100735", 0)
    synsets[2] = (1001, "n00001740", 5)  # an inner node, ignored
    savemat(data / "meta.mat", {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n")
    (val / "devkit").symlink_to(tmp_path / "devkit")  # looked for beside the images
    with pytest.raises(DataError, match="no labels"):
        imagenet_val_labels(val)  # data/ is one level deeper than looked for
    (val / "devkit").unlink()
    for name in ("meta.mat", "ILSVRC2012_validation_ground_truth.txt"):
        (tmp_path / name).write_bytes((data / name).read_bytes())
    labels = imagenet_val_labels(val)
    assert labels == {"ILSVRC2012_val_00000001.JPEG": "n02100735",
                      "ILSVRC2012_val_00000002.JPEG": "n02119789"}
    ds = source_images(val)
    assert sorted(ds.targets.tolist()) == sorted([wnid_to_index()["n02100735"],
                                                  wnid_to_index()["n02119789"]])
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("2\nfoo\n")
    with pytest.raises(DataError, match="row 2: 'foo'"):
        imagenet_val_labels(val)


def test_a_study_file_takes_a_csv_target(csv_data, tmp_path, monkeypatch):
    """Issue 27, item 2: `[target] data = "labels.csv"` was "data folder not found"."""
    from transferscope.data.fetch import ensure_sets
    from transferscope.errors import DataError

    monkeypatch.chdir(csv_data.parent)
    assert ensure_sets(["labels.csv"], tmp_path / "root") == []  # found, nothing to fetch
    assert ensure_sets([str(csv_data)], tmp_path / "root") == []
    with pytest.raises(DataError, match="CSV file not found: 'nope.csv'"):
        ensure_sets(["nope.csv"], tmp_path / "root")

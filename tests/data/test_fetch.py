"""Downloads of the known sets against a loopback HTTP server (Range support, truncation),
serving tiny archives built at test time in the upstream layouts from the shared data."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from transferscope.data import fetch as fetch_mod
from transferscope.data._download import download
from transferscope.data.fetch import ensure_sets, fetch
from transferscope.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ELI_ROOT = f"imagenet-sample-images-{fetch_mod._ELI}"
# files per set, as named in the shared copy (relative to the set's folder)
PICK = {
    "hymenoptera": ["train/ants/0013035.jpg", "train/bees/1092977343_cb42b38d62.jpg",
                    "val/ants/10308379_1b6c72e180.jpg", "val/bees/1032546534_06907fe3b3.jpg"],
    "imagenet-samples": ["n01440764_tench.JPEG", "n01443537_goldfish.JPEG",
                         "n02102040_English_springer.JPEG"],
    "imagenette": ["train/n01440764/n01440764_10095.jpg",
                   "val/n01440764/ILSVRC2012_val_00021740.jpg",
                   "val/n02102040/ILSVRC2012_val_00016582.jpg"],
    "chest-xray": ["train/NORMAL/IM-0117-0001.jpg", "val/PNEUMONIA/person1071_bacteria_3005.jpg"],
}


class _Server:
    """Serves ``files`` (path -> bytes) with HTTP Range; can cut the first N responses short."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests, self.truncate, self.ignore_range = files, [], 0, False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path.lstrip("/"))
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.truncate > 0:  # announce everything, send a third, hang up
                    server.truncate -= 1
                    payload = payload[: len(payload) // 3]
                    self.close_connection = True
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _medmnist_npz(per_label: dict[str, int]) -> bytes:
    """A MedMNIST-shaped .npz: uint8 64 x 64 images and (n, 1) labels per split; label 0
    images dark, label 1 bright, so the unpacked folders are checkable."""
    import numpy as np

    arrays = {}
    for split, n in per_label.items():
        labels = np.repeat([0, 1], n).reshape(-1, 1).astype(np.uint8)
        arrays[f"{split}_images"] = np.where(labels[:, :, None] == 1, 200, 30).astype(
            np.uint8) * np.ones((1, 64, 64), np.uint8)
        arrays[f"{split}_labels"] = labels
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


MEDMNIST = _medmnist_npz({"train": 4, "val": 3, "test": 1})


def _upstream(name: str, root: Path, alter=lambda rel, data: data) -> bytes:
    """The set's archive in its upstream layout, holding the PICK files (+ extras upstream has)."""
    if name == "pneumoniamnist":
        return MEDMNIST
    src = {rel: alter(rel, (root / name / rel).read_bytes()) for rel in PICK[name]}
    if name == "hymenoptera":
        members = {f"hymenoptera_data/{rel}": d for rel, d in src.items()}
        members["hymenoptera_data/train/ants/imageNotFound.gif"] = b"GIF89a"
        return _zip(members)
    if name == "imagenet-samples":
        members = {f"{ELI_ROOT}/{rel}": d for rel, d in src.items()}
        members[f"{ELI_ROOT}/README.md"] = b"# samples"
        return _zip(members)
    if name == "chest-xray":  # every file of the subset is in upstream's train/, as .jpeg
        members = {f"chest_xray/train/{Path(rel).parent.name}/{Path(rel).stem}.jpeg": d
                   for rel, d in src.items()}
        members["chest_xray/test/NORMAL/IM-0001-0001.jpeg"] = b"not in the subset"
        members["__MACOSX/chest_xray/._train"] = b"junk"
        return _zip(members)
    members = {f"imagenette2-160/{Path(rel).with_suffix('.JPEG')}": d for rel, d in src.items()}
    members["imagenette2-160/noisy_imagenette.csv"] = b"path,noisy_labels_0\n"
    members["imagenette2-160/train/n01440764/n01440764_1.JPEG"] = b"not in the subset"
    return _tgz(members)


@pytest.fixture
def tiny(data_root, tmp_path, monkeypatch):
    """Test-only manifests for the PICK files, and the archives a mirror would serve."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for name, rels in PICK.items():
        lines = [f"{hashlib.sha256((data_root / name / r).read_bytes()).hexdigest()}  {r}"
                 + (f"  train/{Path(r).parent.name}/{Path(r).stem}.jpeg"
                    if name == "chest-xray" else "") for r in rels]
        (manifests / f"{name}.sha256").write_text("# test manifest\n" + "\n".join(lines) + "\n")
    monkeypatch.setattr(fetch_mod, "MANIFESTS", manifests)
    import dataclasses

    small = dataclasses.replace(  # the synthetic archive's MD5; 3 + 2 images per class
        fetch_mod.KNOWN_REMOTE["pneumoniamnist"], md5=hashlib.md5(MEDMNIST).hexdigest(),
        medmnist={"labels": {0: "NORMAL", 1: "PNEUMONIA"}, "per_class": {"train": 3, "val": 2}})
    monkeypatch.setitem(fetch_mod.KNOWN_REMOTE, "pneumoniamnist", small)
    monkeypatch.delenv(fetch_mod.MIRROR_ENV, raising=False)
    archives = {spec.filename: _upstream(name, data_root)
                for name, spec in fetch_mod.KNOWN_REMOTE.items()}
    return data_root, archives


@pytest.mark.shared_data
def test_demo_sets_fetched_into_empty_root(tiny, tmp_path, monkeypatch):
    """The demo's data resolution on a fresh machine: every set it names comes from the mirror,
    lands in the upstream layout and is verified file by file."""
    from transferscope.data import image_folder, source_images

    from transferscope.studies.demo import demo_studies

    shared, archives = tiny
    root = tmp_path / "empty-root"
    entries = sorted({e for spec, _, _ in demo_studies(data_root=root)
                      for e in (spec.target.data, *spec.source_images.sets)})
    assert "pneumoniamnist" in entries and "chest-xray" not in entries  # 20 MB, not 1.2 GB
    first_run = sum(fetch_mod.KNOWN_REMOTE[n].megabytes for n in {e.split("/")[0] for e in entries})
    assert first_run < 300, first_run
    with _Server(archives) as srv:
        monkeypatch.setenv(fetch_mod.MIRROR_ENV, srv.base + "/")
        assert sorted(ensure_sets(entries, root)) == sorted(set(fetch_mod.KNOWN_REMOTE)
                                                            - {"chest-xray"})
        assert ensure_sets(entries, root) == []  # present now: nothing downloaded again
        assert len(srv.requests) == 4
    record = json.loads((root / "pneumoniamnist" / "DOWNLOAD.json").read_text())
    assert record["counts"] == {"train/NORMAL": 3, "train/PNEUMONIA": 3, "val/NORMAL": 2,
                                "val/PNEUMONIA": 2}
    assert record["verification"] == "archive MD5 equal to the one MedMNIST publishes"
    xray = image_folder(root / "pneumoniamnist", "train")
    assert xray.classes == ["NORMAL", "PNEUMONIA"] and len(xray) == 6
    import numpy as np

    for img, y in (xray[i] for i in range(len(xray))):  # NORMAL (label 0) dark, PNEUMONIA bright
        assert (np.asarray(img).mean() > 100) == (xray.classes[y] == "PNEUMONIA")
    with _Server(archives) as srv:  # the prepared X-ray copy, fetched when asked for by name
        monkeypatch.setenv(fetch_mod.MIRROR_ENV, srv.base + "/")
        assert ensure_sets(["chest-xray"], root) == ["chest-xray"]
    assert [s.target.data for s, _, _ in demo_studies(data_root=root)][1] == "chest-xray"
    for name, rels in PICK.items():
        record = json.loads((root / name / "DOWNLOAD.json").read_text())
        assert record["files"] == record["files_matching_manifest"] == len(rels)
        assert record["verification"].startswith("every file's sha256 matches")
        assert record["archive_sha256"] == hashlib.sha256(
            archives[fetch_mod.KNOWN_REMOTE[name].filename]).hexdigest()
    record = json.loads((root / "imagenette" / "DOWNLOAD.json").read_text())
    assert record["left_out"] == 2  # imagenette: the csv and the image outside the subset
    assert record["counts"] == {"train/n01440764": 1, "val/n01440764": 1, "val/n02102040": 1}
    # chest-xray regroups upstream's train/ into a patient-disjoint train/val split
    record = json.loads((root / "chest-xray" / "DOWNLOAD.json").read_text())
    assert record["left_out"] == 2 and record["counts"] == {"train/NORMAL": 1,
                                                            "val/PNEUMONIA": 1}
    assert (root / "chest-xray/val/PNEUMONIA/person1071_bacteria_3005.jpeg").read_bytes() == \
        (shared / "chest-xray/val/PNEUMONIA/person1071_bacteria_3005.jpg").read_bytes()
    assert image_folder("chest-xray", "val", data_root=root).classes == ["PNEUMONIA"]
    assert not (root / "hymenoptera" / "train" / "ants" / "imageNotFound.gif").exists()
    assert (root / "imagenette/val/n01440764/ILSVRC2012_val_00021740.JPEG").read_bytes() == \
        (shared / "imagenette/val/n01440764/ILSVRC2012_val_00021740.jpg").read_bytes()
    assert image_folder("hymenoptera", "train", data_root=root).class_counts() == [1, 1]
    assert len(source_images("imagenet-samples", data_root=root)) == 3
    assert source_images("imagenette", "val", data_root=root).class_counts()[:2] != [0, 0]
    assert not list((root / ".downloads").glob("*.part"))


@pytest.mark.shared_data
def test_truncated_download_resumes(tiny, tmp_path):
    _, archives = tiny
    body = archives["hymenoptera_data.zip"]
    with _Server(archives) as srv:
        url = f"{srv.base}/hymenoptera_data.zip"
        srv.truncate = 1
        with pytest.raises(DataError, match="broke off.*run the same command again to resume"):
            fetch("hymenoptera", tmp_path, url=url, retries=0)
        part = next((tmp_path / ".downloads").glob("*.part"))
        assert 0 < part.stat().st_size < len(body)
        have = part.stat().st_size
        dest = fetch("hymenoptera", tmp_path, url=url, retries=0,
                     sha256=hashlib.sha256(body).hexdigest())
        assert srv.requests[-1] == ("/hymenoptera_data.zip", f"bytes={have}-")
        assert (dest / "val/bees/1032546534_06907fe3b3.jpg").is_file()
        # within one call: two cut-off responses, then the rest, each resuming
        srv.truncate, srv.requests[:] = 2, []
        part2 = tmp_path / "again.part"
        download(url, part2, desc="x", retries=3, progress=False)
        assert part2.read_bytes() == body
        assert [r[1] is not None for r in srv.requests] == [False, True, True]
        # a server that ignores Range answers 200: the file starts over, not doubled
        srv.truncate, srv.ignore_range = 1, True
        part3 = tmp_path / "third.part"
        download(url, part3, desc="x", retries=2, progress=False)
        assert part3.read_bytes() == body


@pytest.mark.shared_data
def test_checksum_mismatch_fails_with_one_line(tiny, tmp_path, capsys, monkeypatch):
    from transferscope.cli import main

    _, archives = tiny
    with _Server(archives) as srv:
        url = f"{srv.base}/imagenette2-160.tgz"
        rc = main(["data", "fetch", "imagenette", "--url", url, "--sha256", "ab" * 32,
                   "--data-root", str(tmp_path)])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert "checksum mismatch for imagenette" in err and "ab" * 32 in err
        assert not (tmp_path / "imagenette").exists()
        assert not list((tmp_path / ".downloads").glob("*.part"))  # corrupt: not resumed
        good = hashlib.sha256(archives["imagenette2-160.tgz"]).hexdigest()
        assert main(["data", "fetch", "imagenette", "--url", url, "--sha256", good.upper(),
                     "--data-root", str(tmp_path)]) == 0
        assert json.loads((tmp_path / "imagenette/DOWNLOAD.json").read_text())[
            "archive_sha256_pinned"] is True


@pytest.mark.shared_data
def test_archive_checks(tiny, tmp_path):
    """Originals of the same images pass on names and counts only (recorded as such); a copy
    where some files differ, one lacking a pinned file, and unsafe paths all fail."""
    shared, archives = tiny
    flip = lambda rel, data: data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]  # noqa: E731
    first = PICK["imagenet-samples"][0]
    served = {"orig.zip": _upstream("imagenet-samples", shared, flip),
              "mixed.zip": _upstream("imagenet-samples", shared,
                                     lambda rel, d: flip(rel, d) if rel == first else d),
              "short.zip": _zip({f"{ELI_ROOT}/{first}": (shared / "imagenet-samples" / first)
                                 .read_bytes()}),
              "evil.zip": _zip({"../evil.JPEG": b"x"})}
    with _Server(served) as srv:
        dest = fetch("imagenet-samples", tmp_path / "a", url=f"{srv.base}/orig.zip")
        record = json.loads((dest / "DOWNLOAD.json").read_text())
        assert record["files"] == 3 and record["files_matching_manifest"] == 0
        assert "only the archive sha256 can pin them" in record["verification"]
        for archive, msg in (("mixed.zip", "1 of 3 files differ from their pinned sha256"),
                             ("short.zip", "lacks 2 of the 3 pinned files"),
                             ("evil.zip", "unsafe path")):
            with pytest.raises(DataError, match=msg):
                fetch("imagenet-samples", tmp_path / archive, url=f"{srv.base}/{archive}")
            assert not (tmp_path / archive / "imagenet-samples").exists()
        with pytest.raises(DataError, match="HTTP 404"):
            fetch("imagenet-samples", tmp_path / "b", url=f"{srv.base}/nothing.zip")
    # an archive copied from elsewhere: a file:// URL
    (tmp_path / "copied.zip").write_bytes(served["orig.zip"])
    dest = fetch("imagenet-samples", tmp_path / "c", url=(tmp_path / "copied.zip").as_uri())
    assert len(list(dest.glob("*.JPEG"))) == 3


def test_offline_demo_names_each_missing_set(tmp_path, capsys, monkeypatch):
    """No network: the demo stops before any work with one line per missing set."""
    from transferscope.cli import main

    monkeypatch.setenv(fetch_mod.MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens there
    rc = main(["demo", "--quick", "--out", str(tmp_path / "out"),
               "--data-root", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("downloading ")]
    assert len(lines) == 6, err
    assert "about 271 MB in all" in err  # the total, said before anything downloads
    for line, name in zip(lines[1:5], ("hymenoptera", "imagenet-samples", "imagenette",
                                       "pneumoniamnist")):
        assert line.startswith(f"  {name}: ") and "B from http://127.0.0.1:9/" in line
    assert "--data-root" in lines[-1]
    assert not (tmp_path / "out" / "runs").exists()


def test_a_missing_unknown_set_fails_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch_mod.MIRROR_ENV, "http://127.0.0.1:9")
    calls = []
    monkeypatch.setattr(fetch_mod, "fetch", lambda *a, **k: calls.append(a))
    with pytest.raises(DataError, match="data folder not found: 'my-set/val'"):
        ensure_sets(["imagenet-samples", "my-set/val"], tmp_path)
    assert calls == []
    (tmp_path / "my-set" / "val").mkdir(parents=True)
    assert ensure_sets(["imagenet-samples", "my-set/val", str(tmp_path)], tmp_path) == [
        "imagenet-samples"] and len(calls) == 1


def test_pneumoniamnist_checked_against_the_published_md5_and_its_layout(tiny, tmp_path,
                                                                          monkeypatch):
    """A changed archive fails on MedMNIST's MD5 (and is deleted); an npz of another layout
    fails in one line naming the arrays it lacks."""
    import numpy as np

    from transferscope.data._medmnist import unpack_npz

    _, archives = tiny
    flipped = MEDMNIST[:100] + bytes([MEDMNIST[100] ^ 1]) + MEDMNIST[101:]
    changed = dict(archives, **{"pneumoniamnist_64.npz": flipped})
    with _Server(changed) as srv:
        monkeypatch.setenv(fetch_mod.MIRROR_ENV, srv.base + "/")
        with pytest.raises(DataError, match="checksum mismatch for pneumoniamnist.*MD5"):
            fetch("pneumoniamnist", tmp_path / "root")
    assert not list((tmp_path / "root" / ".downloads").glob("*.part"))
    assert not (tmp_path / "root" / "pneumoniamnist").exists()
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no uint8 'train_images'"):
        unpack_npz(other, tmp_path / "out", {0: "a"}, {"train": 1})
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        unpack_npz(tmp_path / "bad.npz", tmp_path / "out", {0: "a"}, {"train": 1})

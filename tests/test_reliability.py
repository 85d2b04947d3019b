"""Reliability and security (issue 7): bad input files, kill -9 and resume, checkpoints that
carry code, flipped bytes, and byte-identical results for the same seed.

Everything runs through the public entry points (``transferscope train`` / ``audit-memory``,
``image_folder``, ``predict``) on tiny synthetic folders at 32 px.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_folder, write_image
from transferscope._io import file_sha256, load_state_dict_file
from transferscope.cli import main
from transferscope.data import image_folder
from transferscope.engine import predict
from transferscope.errors import ModelError
from transferscope.models import load_model

SRC_COLOURS = {"n01440764": (200, 40, 40), "n01443537": (40, 200, 40),
               "n01484850": (40, 40, 200), "n01491361": (200, 200, 40)}
ANALYSES = "retained_knowledge,interference_bias,agreement,lingering_features"


def _train_args(data, out, epochs=3, seed=0):
    return ["train", "--arch", "baseline_cnn", "--init", "random", "--recipe",
            "paper000-scratch", "--epochs", str(epochs), "--image-size", "32",
            "--batch-size", "4", "--lr", "1e-3", "--seed", str(seed), "--data", str(data),
            "--out", str(out)]


def _audit_args(runs, target, src, out, split="val", analyses=ANALYSES):
    return ["audit-memory", "--model", f"fine-tuned={runs / 'ft'}",
            "--model", f"scratch={runs / 'scratch'}", "--target", str(target),
            "--target-split", split, "--source-images", str(src), "--views", "2",
            "--image-size", "32", "--analyses", analyses, "--out", str(out)]


def _make_source(folder: Path) -> Path:
    for wnid, rgb in SRC_COLOURS.items():
        for i in range(2):
            write_image(folder / f"{wnid}_{i}.JPEG", rgb, size=(48, 40))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny data, ImageNet-named source images, a fine-tuned lite0 and a scratch CNN run."""
    root = tmp_path_factory.mktemp("rel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERSCOPE_CACHE", str(root / "fixture-cache"))
        mp.setenv("TRANSFERSCOPE_PROGRESS", "0")
        data = root / "tinyset"
        make_folder(data / "train", per_class=8, seed=1)
        make_folder(data / "val", per_class=4, seed=2)
        _make_source(root / "src")
        assert main(["train", "--arch", "efficientnet_lite0", "--init", "imagenet", "--recipe",
                     "quick", "--epochs", "1", "--image-size", "32", "--batch-size", "8",
                     "--data", str(data), "--out", str(root / "ft")]) == 0
        assert main(_train_args(data, root / "scratch", epochs=2)) == 0
    return root


def _json_files(folder: Path) -> dict[str, bytes]:  # and CSV
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.suffix in (".json", ".csv")}


def _fresh_cache(monkeypatch, path: Path) -> None:
    import transferscope.engine.inference as inf

    monkeypatch.setenv("TRANSFERSCOPE_CACHE", str(path))
    monkeypatch.setattr(inf, "_default_cache", None)


# --------------------------------------------------------------------------- bad inputs
def _bad_folder(root: Path) -> tuple[Path, set[str], set[str]]:
    """``root/{train,val}`` with every kind of awkward file in ``train``; returns the folder,
    the names that must be used and the names that must be skipped (with their path)."""
    make_folder(root / "train", per_class=6, seed=1)
    make_folder(root / "val", per_class=3, seed=2)
    ants, bees = root / "train" / "ants", root / "train" / "bees"
    good = (bees / "bees_0.jpg").read_bytes()
    (bees / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bees / "text.jpg").write_text("this is not an image")
    write_image(ants / "cmyk.jpg", (200, 40, 40), mode="CMYK")
    write_image(ants / "grey.png", (200, 40, 40), mode="L")
    Image.fromarray(np.full((32, 40), 50_000, dtype=np.uint16)).save(ants / "deep16.png")
    write_image(bees / "one.png", (40, 40, 200), size=(1, 1))
    huge = Image.new("L", (10_000, 10_000), 90)  # over PIL's bomb limit; uniform: small files
    huge.save(ants / "huge.jpg", quality=30)  # used: decoded at 1/2 scale
    huge.save(bees / "huge.png", compress_level=1)  # skipped: not a JPEG, over MAX_PIXELS
    del huge
    os.symlink("loop_b.jpg", bees / "loop_a.jpg")
    os.symlink("loop_a.jpg", bees / "loop_b.jpg")
    os.symlink(bees, bees / "dir_loop")  # a directory cycle: walked once
    (root / "train" / "wasps").mkdir()  # empty class folder
    ants_b = os.fsencode(str(ants))
    with open(ants_b + b"/caf\xe9.jpg", "wb") as fh:  # not UTF-8: a valid image
        fh.write((ants / "ants_0.jpg").read_bytes())
    with open(ants_b + b"/bad\xff.jpg", "wb") as fh:  # not UTF-8: not an image
        fh.write(b"garbage")
    used = {"cmyk.jpg", "grey.png", "deep16.png", "huge.jpg", os.fsdecode(b"caf\xe9.jpg")}
    skipped = {"truncated.jpg", "text.jpg", "one.png", "huge.png", "loop_a.jpg", "loop_b.jpg",
               "wasps", os.fsdecode(b"bad\xff.jpg")}
    return root, used, skipped


def test_bad_inputs_are_used_or_skipped_and_listed_in_the_results(runs, tmp_path, capsys):
    data, used, skipped = _bad_folder(tmp_path / "bad")
    ds = image_folder(data, "train", empty_classes="skip")
    assert ds.classes == ["ants", "bees"]
    assert {Path(s.path).name for s in ds.samples} >= used
    reasons = {Path(s.path).name: s.reason for s in ds.skipped}
    assert set(reasons) == skipped
    assert "over the limit" in reasons["huge.png"] and "too small" in reasons["one.png"]
    assert "symbolic links" in reasons["loop_a.jpg"] and "no usable image" in reasons["wasps"]
    assert ds.load_image([Path(s.path).name for s in ds.samples].index("huge.jpg")).size == (
        5000, 5000)  # decoded at 1/2 scale by the JPEG decoder
    pred = predict(load_model(runs / "scratch" / "model.safetensors"), ds, image_size=32)
    assert pred.logits.shape == (len(ds), 2) and torch.isfinite(pred.logits).all()

    # a training run finishes and lists every skipped file with its path in data.json
    assert main(_train_args(data, tmp_path / "run", epochs=1)) == 0
    run_json = json.loads((tmp_path / "run" / "data.json").read_text())
    assert run_json["train"]["n"] == len(ds) and run_json["classes"] == ["ants", "bees"]
    assert {Path(s["path"]).name for s in run_json["skipped"]} == skipped
    assert all(Path(s["path"]).is_absolute() for s in run_json["skipped"])

    # so does an audit on the same folder: index.json and the report list the skipped files
    bad_src = _make_source(tmp_path / "src")
    (bad_src / "n01440764_broken.JPEG").write_bytes(b"\xff\xd8\xff not really")
    assert main(_audit_args(runs, data, bad_src, tmp_path / "audit", split="train",
                            analyses="interference_bias")) == 0
    index = json.loads((tmp_path / "audit" / "results" / "index.json").read_text())
    listed = {Path(s["path"]).name for s in index["skipped_files"]}
    assert listed == skipped | {"n01440764_broken.JPEG"}
    report = (tmp_path / "audit" / "report.html").read_text()
    assert "n01440764_broken.JPEG" in report and "truncated.jpg" in report


# --------------------------------------------------------------------------- kill -9
def _cli_proc(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "transferscope.cli", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, trigger: Path, delay: float, timeout: float = 60) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``trigger`` appears; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not trigger.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def _interrupt_repeatedly(first: list[str], again: list[str], triggers: list[Path],
                          rng: random.Random, env: dict, kills: int, max_delay: float) -> int:
    """Start ``first``, kill it at a seeded random point, re-run ``again`` the same way
    ``kills`` times, then let ``again`` finish; returns how many kills hit a live process."""
    hits = 0
    for attempt in range(kills):
        pending = [t for t in triggers if not t.exists()] or triggers[-1:]
        proc = _cli_proc(first if attempt == 0 else again, env)
        hits += _kill_when(proc, rng.choice(pending), rng.uniform(0, max_delay))
    done = subprocess.run([sys.executable, "-m", "transferscope.cli", *map(str, again)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return hits


def _env(cache: Path) -> dict:
    """Bit-identical float results need the same number of threads as this process."""
    return {**os.environ, "TRANSFERSCOPE_CACHE": str(cache), "TRANSFERSCOPE_PROGRESS": "0",
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


@pytest.mark.slow
def test_kill_9_during_training_and_audit_then_resume_equals_uninterrupted(runs, tmp_path):
    rng = random.Random(7)
    data = runs / "tinyset"
    # training: three kills at seeded points (setup, any epoch, the final save), then --resume
    assert main(_train_args(data, tmp_path / "full", epochs=4)) == 0
    cut = tmp_path / "cut"
    triggers = [cut / "init_random.safetensors", cut / "config.json",
                *(cut / "checkpoints" / f"epoch_{e:04d}.safetensors" for e in (1, 2, 3, 4))]
    keep = ["--keep-checkpoints", "all"]  # every epoch file stays, to trigger kills on
    hits = _interrupt_repeatedly(_train_args(data, cut, epochs=4) + keep,
                                 _train_args(data, cut, epochs=4) + keep + ["--resume"],
                                 triggers, rng, _env(tmp_path / "cache-train"), kills=3,
                                 max_delay=0.08)
    assert hits >= 2  # seeded: the kills land in setup, in an epoch and after the last one
    assert file_sha256(cut / "model.safetensors") == file_sha256(tmp_path / "full" /
                                                                  "model.safetensors")
    for name in ("metrics.json", "data.json", "config.json", "init.safetensors"):
        assert (cut / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name

    # audit: kills while analyses run; re-running the same command finishes from the cache
    assert main(_audit_args(runs, data, runs / "src", tmp_path / "audit-full")) == 0
    out = tmp_path / "audit-cut"
    triggers = [out / "results" / f"{n}.json" for n in ANALYSES.split(",")] + [
        out / "results" / "index.json"]
    args = _audit_args(runs, data, runs / "src", out)
    hits = _interrupt_repeatedly(args, args, triggers, rng, _env(tmp_path / "cache-audit"),
                                 kills=2, max_delay=0.3)
    assert hits >= 1
    assert _json_files(out / "results") == _json_files(tmp_path / "audit-full" / "results")


def test_run_killed_during_setup_resumes_with_its_config(tmp_path, tiny_split, monkeypatch):
    """A kill after init.safetensors but before config.json used to leave a run that resumed
    without ever writing config.json/data.json."""
    import transferscope.engine.training_steps as tr  # writes the run's start

    real = tr.atomic_write_json

    def dying(path, obj):
        if Path(path).name == "data.json":
            raise KeyboardInterrupt
        return real(path, obj)

    monkeypatch.setattr(tr, "atomic_write_json", dying)
    assert main(_train_args(tiny_split, tmp_path / "cut", epochs=1)) == 130  # Ctrl-C: 130
    monkeypatch.setattr(tr, "atomic_write_json", real)
    assert (tmp_path / "cut" / "init.safetensors").exists()
    assert main(_train_args(tiny_split, tmp_path / "cut", epochs=1) + ["--resume"]) == 0
    assert main(_train_args(tiny_split, tmp_path / "full", epochs=1)) == 0
    for name in ("config.json", "data.json", "metrics.json", "model.safetensors"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


# --------------------------------------------------------------------------- pickles
class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_checkpoint_carrying_code_is_refused_unless_trusted(tmp_path, tiny_split, monkeypatch,
                                                            capsys):
    evil, marker = tmp_path / "evil.pt", tmp_path / "marker"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": _Payload(marker)}, evil)
    monkeypatch.delenv("TRANSFERSCOPE_TRUST_PICKLE", raising=False)
    code = main(["train", "--arch", "baseline_cnn", "--init", str(evil), "--recipe", "quick",
                 "--epochs", "1", "--image-size", "32", "--data", str(tiny_split),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and str(evil) in err and "TRANSFERSCOPE_TRUST_PICKLE" in err
    assert not (tmp_path / "run" / "config.json").exists()
    with pytest.raises(ModelError, match="could not be loaded safely"):
        load_state_dict_file(evil)
    assert not marker.exists()
    # the payload is live: only the explicit trust switch runs it
    monkeypatch.setenv("TRANSFERSCOPE_TRUST_PICKLE", "1")
    load_state_dict_file(evil)
    assert marker.read_text() == "pwned"


def _is_pickle(path: Path) -> bool:
    head = path.read_bytes()[:2]
    if head[:1] == b"\x80":  # a raw pickle (protocol >= 2)
        return True
    if zipfile.is_zipfile(path):  # torch.save's zip format
        return any(n.endswith(".pkl") for n in zipfile.ZipFile(path).namelist())
    return False


def test_outputs_hold_no_pickle_but_the_weights_only_optimiser_state(runs, tmp_path,
                                                                     monkeypatch):
    assert main(_audit_args(runs, runs / "tinyset", runs / "src", tmp_path / "audit")) == 0
    pickles = [p for folder in (runs / "scratch", runs / "ft", tmp_path / "audit")
               for p in folder.rglob("*") if p.is_file() and _is_pickle(p)]
    assert sorted(p.relative_to(runs).as_posix() for p in pickles) == [
        "ft/checkpoints/state.pt", "scratch/checkpoints/state.pt"]
    suffixes = {p.suffix for folder in (runs / "scratch", tmp_path / "audit")
                for p in folder.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".csv", ".safetensors", ".png", ".html", ".pt",
                        ".lock", ".toml"}  # study.toml (audit-memory), the folders' writer-lock files (empty)
    # state.pt is read with weights_only=True (and its content hash checked)
    import transferscope._io as io

    seen, real = [], torch.load
    monkeypatch.setattr(io.torch, "load", lambda *a, **k: seen.append(k) or real(*a, **k))
    run = tmp_path / "resumed"
    assert main(_train_args(runs / "tinyset", run, epochs=1)) == 0
    (run / "model.safetensors").unlink()
    assert main(_train_args(runs / "tinyset", run, epochs=1) + ["--resume"]) == 0
    assert seen and all(k.get("weights_only") is True for k in seen)


# --------------------------------------------------------------------------- flipped bytes
def _flip(path: Path, offset: int = -8) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_flipped_bytes_are_recomputed_or_reported(runs, tmp_path, monkeypatch, capsys):
    cache_dir = tmp_path / "cache"
    _fresh_cache(monkeypatch, cache_dir)
    assert main(_audit_args(runs, runs / "tinyset", runs / "src", tmp_path / "a")) == 0
    entries = sorted((cache_dir / "inference").rglob("*.safetensors"))
    assert entries
    for entry in entries[:2]:
        _flip(entry)
    _fresh_cache(monkeypatch, cache_dir)
    assert main(_audit_args(runs, runs / "tinyset", runs / "src", tmp_path / "b")) == 0
    stats = json.loads((tmp_path / "b" / "run_stats.json").read_text())
    assert stats["cache"]["corrupt"] == 2
    assert _json_files(tmp_path / "b" / "results") == _json_files(tmp_path / "a" / "results")

    # a saved model with a flipped byte is refused by name, by the audit and by --resume
    run = tmp_path / "run"
    assert main(_train_args(runs / "tinyset", run, epochs=2)) == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("model.safetensors", "config.json"):
        (broken / f).write_bytes((run / f).read_bytes())
    _flip(broken / "model.safetensors")
    capsys.readouterr()
    args = _audit_args(runs, runs / "tinyset", runs / "src", tmp_path / "c")
    args[args.index(f"scratch={runs / 'scratch'}")] = f"scratch={broken}"
    assert main(args) == 2
    assert "corrupt" in capsys.readouterr().err
    (run / "model.safetensors").unlink()
    _flip(run / "checkpoints" / "epoch_0002.safetensors")
    assert main(_train_args(runs / "tinyset", run, epochs=2) + ["--resume"]) == 2
    assert "epoch_0002.safetensors is corrupt" in capsys.readouterr().err
    # the optimiser state (a torch zip: no checksum of its own) carries a content hash
    state = run / "checkpoints" / "state.pt"
    info = [i for i in zipfile.ZipFile(state).infolist() if "/data/" in i.filename][-1]
    local = state.read_bytes()[info.header_offset:info.header_offset + 30]
    _flip(state, info.header_offset + 30 + int.from_bytes(local[26:28], "little")
          + int.from_bytes(local[28:30], "little") + 3)  # a byte of the last tensor's data
    (run / "checkpoints" / "epoch_0002.safetensors").unlink()
    assert main(_train_args(runs / "tinyset", run, epochs=2) + ["--resume"]) == 2
    assert "state.pt is corrupt" in capsys.readouterr().err


def test_tampered_file_index_is_rebuilt_not_trusted(tiny_folder):
    from transferscope import config

    before = image_folder(tiny_folder).digest
    index = config.cache_dir() / "file-index.json"
    stored = json.loads(index.read_text())
    key = next(iter(stored["entries"]))
    stored["entries"][key][1] = "0" * 64  # a wrong content hash for one file
    index.write_text(json.dumps(stored))
    assert image_folder(tiny_folder).digest == before


# --------------------------------------------------------------------------- determinism
def test_same_seed_twice_gives_byte_identical_results(runs, tmp_path, monkeypatch):
    for name in ("a", "b"):
        _fresh_cache(monkeypatch, tmp_path / f"cache-{name}")
        assert main(_train_args(runs / "tinyset", tmp_path / f"run-{name}", epochs=2)) == 0
        assert main(_audit_args(runs, runs / "tinyset", runs / "src",
                                tmp_path / f"audit-{name}")) == 0
    run_a, run_b = _json_files(tmp_path / "run-a"), _json_files(tmp_path / "run-b")
    assert set(run_a) == {"config.json", "data.json", "metrics.json", "timings.json"}
    run_a.pop("timings.json"), run_b.pop("timings.json")  # wall times: volatile by design
    assert run_a == run_b
    assert file_sha256(tmp_path / "run-a" / "model.safetensors") == file_sha256(
        tmp_path / "run-b" / "model.safetensors")
    res_a = _json_files(tmp_path / "audit-a" / "results")
    assert "index.json" in res_a and len(res_a) > len(ANALYSES.split(","))
    assert res_a == _json_files(tmp_path / "audit-b" / "results")
    assert "seconds" in json.loads((tmp_path / "audit-a" / "run_stats.json").read_text())

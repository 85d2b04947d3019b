"""`transferscope cache info|clear`: sizes per kind, --older-than, an LRU --max-size cap."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from transferscope.engine import ResultCache
from transferscope.engine.cache_admin import clear, entries, info, parse_age, parse_size
from transferscope.errors import ConfigError


def _filled(tmp_path):
    """A cache with entries of known kinds, sizes and last-use times (1..5 days ago)."""
    root = tmp_path / "cache"
    cache = ResultCache(root / "inference")
    now = time.time()
    keys = {}
    for i, (kind, name, n) in enumerate([("predict", "logits", 1000), ("features", "features",
                                         2000), ("gradcam", "cam", 3000),
                                         ("predict", "logits", 4000)]):
        keys[i] = cache.key(i=i)
        cache.put(keys[i], {name: torch.zeros(n), "labels": torch.zeros(2)})
        os.utime(cache.path(keys[i]), (now - (i + 1) * 86400,) * 2)
    analysis = root / "inference" / "analyses" / ("ab" * 32)
    (analysis / "results").mkdir(parents=True)
    (analysis / "results" / "cka.json").write_text("{}" * 100)
    (analysis / "DONE").write_text("cka")
    for f in (analysis / "results" / "cka.json", analysis / "DONE", analysis):
        os.utime(f, (now - 5 * 86400,) * 2)
    (root / "file-index.json").write_text("{}")
    (root / "notes.txt").write_text("not ours")  # never deleted
    return root, cache, keys, now


def test_info_counts_sizes_per_kind(tmp_path):
    root, cache, keys, _ = _filled(tmp_path)
    res = info(root)
    kinds = res["kinds"]
    assert {k: v["entries"] for k, v in kinds.items()} == {
        "analysis": 1, "features": 1, "file-index": 1, "gradcam": 1, "other": 1, "predict": 2}
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert res["bytes"] == on_disk and res["entries"] == 7
    assert kinds["predict"]["bytes"] == sum(cache.path(keys[i]).stat().st_size for i in (0, 3))
    assert kinds["predict"]["bytes"] > 4 * 5000  # float32 tensors: 4 bytes per value


def test_clear_by_age_and_lru_size_cap(tmp_path, capsys):
    from transferscope.cli import main

    root, cache, keys, now = _filled(tmp_path)
    # a hit refreshes the last use: entry 3 (4 days old) becomes the most recent
    assert cache.get(keys[3]) is not None
    res = clear(root, older_than=parse_age("2.5d"), dry_run=True)
    assert res["removed"] == 2  # entry 2 (3 days) and the analysis (5 days), not entry 3
    assert cache.path(keys[2]).exists()  # dry run
    size = {i: cache.path(keys[i]).stat().st_size for i in keys}
    # cap: keep the most recently used that fit -> evicts analysis, then 2, then 1
    cap = size[3] + size[0] + 10
    assert main(["cache", "clear", "--cache-dir", str(root), "--max-size", str(cap)]) == 0
    assert "removed" in capsys.readouterr().out
    left = {e.kind: e for e in entries(root)}
    assert not cache.path(keys[1]).exists() and not cache.path(keys[2]).exists()
    assert cache.path(keys[0]).exists() and cache.path(keys[3]).exists()
    assert "analysis" not in left and "file-index" in left  # the index was used just now
    assert sum(e.size for e in entries(root) if e.removable) <= cap
    assert (root / "notes.txt").exists()
    # clear everything the cache wrote; the info command reports it
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert [e.kind for e in entries(root)] == ["other"]
    capsys.readouterr()
    assert main(["cache", "info", "--cache-dir", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kinds"]["other"]["entries"] == 1


def test_bad_sizes_and_ages_are_one_line_errors(tmp_path, capsys):
    from transferscope.cli import main

    with pytest.raises(ConfigError, match="size '2 parsecs'"):
        parse_size("2 parsecs")
    assert parse_size("2GB") == 2 * 10**9 and parse_age("2w") == 14 * 86400
    assert main(["cache", "clear", "--cache-dir", str(tmp_path), "--older-than", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "age 'soon'" in err

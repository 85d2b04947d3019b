"""A loopback mirror of the demo's data sets, for running the demo "from nothing" offline.

    python benchmarks/serve_mirror.py --data /path/to/shared/data --port 8765 &
    TRANSFERSCOPE_MIRROR=http://127.0.0.1:8765/ transferscope demo --data-root EMPTY_DIR

Builds each known set's archive in its upstream layout (the file names of
``transferscope.data.fetch.KNOWN_REMOTE``, members under upstream's top folders) from the
prepared copies in ``--data`` (once, into ``--cache``), then serves them with Python's
``http.server`` (range requests are not needed: a fresh download starts at 0).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import tarfile
import zipfile
from pathlib import Path

from transferscope.data import fetch as fetch_mod
from transferscope.data._unpack import read_manifest


def _members(name: str, data: Path) -> dict[str, Path]:
    """``{archive member: file}`` of set ``name`` in upstream's layout."""
    manifest = read_manifest(fetch_mod.KNOWN_REMOTE[name].manifest)
    top = {"hymenoptera": "hymenoptera_data", "imagenette": "imagenette2-160",
           "chest-xray": "chest_xray",
           "imagenet-samples": f"imagenet-sample-images-{fetch_mod._ELI}"}[name]
    out = {}
    for key, (_, rel) in manifest.items():
        ext = ".JPEG" if name == "imagenette" else ".jpeg" if name == "chest-xray" else \
            Path(rel).suffix
        out[f"{top}/{key}{ext}"] = data / name / rel
    return out


def build(data: Path, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    for name, spec in fetch_mod.KNOWN_REMOTE.items():
        path = cache / spec.filename
        if path.exists():
            continue
        members = _members(name, data)
        tmp = path.with_suffix(".tmp")
        if spec.filename.endswith(".tgz"):
            with tarfile.open(tmp, "w:gz") as tf:
                for member, src in members.items():
                    tf.add(src, arcname=member)
        else:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                for member, src in members.items():
                    zf.write(src, member)
        tmp.rename(path)
        print(f"{path}: {len(members)} files, {path.stat().st_size / 1e6:.1f} MB", flush=True)
    return cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="prepared copies (../shared/data)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/ts-mirror"))
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    root = build(args.data, args.cache)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as srv:
        print(f"serving {root} at http://127.0.0.1:{args.port}/", flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    main()

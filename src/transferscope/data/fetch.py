"""Downloading known data sets (for users with internet), verified by sha256, failing fast."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transferscope import config
from transferscope._io import atomic_write_json
from transferscope._progress import log
from transferscope.errors import DataError


@dataclass(frozen=True)
class RemoteSet:
    name: str
    url: str
    sha256: str | None  # None: not published upstream; pass sha256= to pin it
    archive_root: str  # folder inside the archive that becomes DATA_ROOT/<name>
    description: str
    expected_files: dict[str, int]  # split/class -> image count, checked after unpacking


KNOWN_REMOTE = {
    "hymenoptera": RemoteSet(
        "hymenoptera", "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        None, "hymenoptera_data", "ants vs bees, PyTorch transfer-learning tutorial",
        {"train/ants": 124, "train/bees": 121, "val/ants": 70, "val/bees": 83}),
}


def fetch(name: str, data_root: str | os.PathLike | None = None, *, timeout: float = 20.0,
          url: str | None = None, sha256: str | None = None) -> Path:
    """Download ``name`` into ``DATA_ROOT/<name>``, verify it and record its sha256.

    The archive is checked against ``sha256`` (argument, else the pinned value) when one is
    known, and its unpacked file counts against the published ones; the digest of what was
    downloaded is written to ``DATA_ROOT/<name>/DOWNLOAD.json``.

    Raises:
        DataError: unknown name, no network (within ``timeout`` seconds), or a checksum
            mismatch - each message says what to do instead.
    """
    if name not in KNOWN_REMOTE:
        raise DataError(f"no download is known for {name!r}; known: {', '.join(KNOWN_REMOTE)}. "
                        "Put your own ImageFolder data under the data root instead.")
    spec = KNOWN_REMOTE[name]
    dest = config.data_root(data_root) / name
    if dest.is_dir() and any(dest.iterdir()):
        log(f"{dest} already exists; nothing to do")
        return dest
    url = url or spec.url
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        archive = Path(tmp) / "download.zip"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DataError(
                f"could not download {name} from {url} ({exc}); this machine may have no "
                f"internet. Download the archive elsewhere, unpack it to {dest} "
                "(layout <name>/{train,val}/<class>/<image>), or set --data-root to where the "
                "data already is") from exc
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        expected = sha256 or spec.sha256
        if expected and digest != expected:
            raise DataError(f"checksum mismatch for {url}: got {digest}, expected {expected}; "
                            "the download is corrupt or the file changed upstream - retry")
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse path traversal
                if member.startswith("/") or ".." in Path(member).parts:
                    raise DataError(f"{url} contains an unsafe path {member!r}; not unpacking")
            zf.extractall(tmp)
        unpacked = Path(tmp) / spec.archive_root
        for sub, count in spec.expected_files.items():
            found = sum(1 for f in (unpacked / sub).glob("*") if f.is_file())
            if found != count:
                raise DataError(f"{url} unpacked {found} files in {sub}, expected {count}; "
                                "the archive changed upstream - check it before use")
        atomic_write_json(unpacked / "DOWNLOAD.json", {"url": url, "sha256": digest})
        shutil.move(str(unpacked), dest)
    log(f"downloaded {name} to {dest}")
    return dest

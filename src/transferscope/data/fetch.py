"""Downloading the known data sets (hymenoptera, imagenet-samples, imagenette, chest-xray,
pneumoniamnist) into the data root: resumable, with progress bars, verified against manifests
shipped with the package (PneumoniaMNIST: against the MD5 MedMNIST publishes).

What is pinned, honestly: upstream publishes no archive checksums, and the package's
manifests (``data/manifests/<name>.sha256``) are the per-file sha256 of the prepared copies
this project tests with (re-encoded, see each set's ``SOURCE.md``). So every download is
checked for the manifest's file *names and counts* (an archive lacking one fails); file
*contents* are verified byte for byte when the archive is such a prepared copy (a mirror),
and otherwise only by the archive's sha256 when you pass one (``--sha256``). What was
verified is written to ``DATA_ROOT/<name>/DOWNLOAD.json`` with the archive's sha256, so later
downloads can be pinned to it.

Mirrors: ``fetch(name, url=...)`` / ``transferscope data fetch NAME --url URL``, or
``$TRANSFERSCOPE_MIRROR`` = a base URL holding the archives under their upstream file names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from transferscope import config
from transferscope._io import atomic_write_json
from transferscope._progress import log
from transferscope.data._download import ConnectError, download
from transferscope.data._medmnist import md5_of, unpack_npz
from transferscope.data._unpack import Unpacked, read_manifest, unpack
from transferscope.errors import DataError

__all__ = ["ensure_sets", "fetch", "KNOWN_REMOTE", "MANIFESTS", "MIRROR_ENV", "RemoteSet",
           "source_url"]

MIRROR_ENV = "TRANSFERSCOPE_MIRROR"
MANIFESTS = Path(__file__).parent / "manifests"
_ELI = "bc69043e2862758a1906c6a24a792bb28c6bb2ff"  # EliSchwartz/imagenet-sample-images


@dataclass(frozen=True)
class RemoteSet:
    name: str
    url: str
    filename: str  # the archive's upstream file name (what a $TRANSFERSCOPE_MIRROR serves)
    size: str  # approximate download size, for messages
    description: str
    sha256: str | None = None  # None: upstream publishes none; pass sha256= to pin one
    megabytes: float = 0.0  # approximate download size, summed before the demo downloads
    md5: str | None = None  # the publisher's own checksum of the archive, where it has one
    medmnist: dict | None = None  # a MedMNIST .npz: {"labels": {int: name}, "per_class": ...}

    @property
    def manifest(self) -> Path:
        return MANIFESTS / f"{self.name}.sha256"


KNOWN_REMOTE = {
    "hymenoptera": RemoteSet(
        "hymenoptera", "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        "hymenoptera_data.zip", "about 47 MB",
        "ants vs bees from the PyTorch transfer-learning tutorial, 397 images", megabytes=47),
    "imagenet-samples": RemoteSet(
        "imagenet-samples",
        f"https://github.com/EliSchwartz/imagenet-sample-images/archive/{_ELI}.zip",
        f"imagenet-sample-images-{_ELI}.zip", "about 110 MB",
        "one ImageNet image per class, 1,000 images", megabytes=110),
    "imagenette": RemoteSet(
        "imagenette", "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
        "imagenette2-160.tgz", "about 94 MB",
        "Imagenette 160 px, the demo's subset of 30 train + 50 val images per class (800)",
        megabytes=94),
    # Kermany et al.'s release on Mendeley Data (v2, CC BY 4.0): the whole ChestXRay2017.zip;
    # only the 750 images of the demo's patient-disjoint subset are unpacked from its train/
    "chest-xray": RemoteSet(
        "chest-xray", "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
        "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded", "ChestXRay2017.zip",
        "about 1.2 GB", "pediatric chest X-rays, NORMAL vs PNEUMONIA: the demo's patient-"
        "disjoint subset of 250 + 125 images per class (750)", megabytes=1200),
    # The same Kermany et al. X-rays at 64 px as MedMNIST+'s PneumoniaMNIST (CC BY 4.0), from
    # its Zenodo record with the MD5 MedMNIST v3.0.2 publishes (medmnist/info.py): the
    # demo's X-ray target on a machine without 'chest-xray' (250 + 125 images per class from
    # MedMNIST's own train and val splits)
    "pneumoniamnist": RemoteSet(
        "pneumoniamnist", "https://zenodo.org/records/10519652/files/pneumoniamnist_64.npz"
        "?download=1", "pneumoniamnist_64.npz", "about 20 MB",
        "pediatric chest X-rays at 64 px (PneumoniaMNIST), NORMAL vs PNEUMONIA: 250 + 125 "
        "images per class (750)", megabytes=20, md5="8f4eceb4ccffa70c672198ea285246c6",
        medmnist={"labels": {0: "NORMAL", 1: "PNEUMONIA"},
                  "per_class": {"train": 250, "val": 125}}),
}


def _spec(name: str) -> RemoteSet:
    if name not in KNOWN_REMOTE:
        raise DataError(f"no download is known for {name!r}; known: {', '.join(KNOWN_REMOTE)}. "
                        "Put your own ImageFolder data under the data root instead.")
    return KNOWN_REMOTE[name]


def source_url(name: str, url: str | None = None) -> str:
    """The URL ``name`` is downloaded from: ``url``, else ``$TRANSFERSCOPE_MIRROR/<file>``,
    else upstream.

    >>> source_url("imagenette", None).endswith("imagenette2-160.tgz")
    True
    """
    spec = _spec(name)
    if url:
        return url
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def _present(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, data_root: str | os.PathLike | None = None, *, timeout: float = 20.0,
          url: str | None = None, sha256: str | None = None,
          manifest: str | os.PathLike | None = None, retries: int = 3,
          progress: bool | None = None) -> Path:
    """Download ``name`` into ``DATA_ROOT/<name>`` unless it is there; verify; record.

    The archive goes to ``DATA_ROOT/.downloads/<file>.part`` first (an interrupted download
    resumes from there), is checked against ``sha256`` when given, and only the files named in
    the set's manifest (or ``manifest``, a ``SHA256SUMS``-style file) are unpacked - e.g. the
    demo's 800 images of Imagenette's 13,394.

    Raises:
        DataError: unknown name, no network (within ``timeout`` seconds), an HTTP error, a
            checksum mismatch or an archive that is not the expected release - each message is
            one line saying what to do instead.
    """
    spec = _spec(name)
    root = config.data_root(data_root)
    dest = root / name
    if _present(dest):
        log(f"{dest} already exists; nothing to do")
        return dest
    url = source_url(name, url)
    expected = (sha256 or spec.sha256 or "").lower() or None
    if expected is not None and (len(expected) != 64 or
                                 any(c not in "0123456789abcdef" for c in expected)):
        raise DataError(f"--sha256 {sha256!r} is not a sha256 (64 hex digits)")
    entries = None if spec.medmnist else read_manifest(Path(manifest) if manifest
                                                        else spec.manifest)
    tag = hashlib.sha1(url.encode()).hexdigest()[:8]  # another URL: another partial file
    part = root / ".downloads" / f"{spec.filename}.{tag}.part"
    try:
        download(url, part, desc=f"{name} ({spec.size})", timeout=timeout, retries=retries,
                 progress=progress)
    except ConnectError as exc:
        raise ConnectError(
            f"could not download {name} ({spec.size}) from {url} ({exc.reason}); this "
            f"machine may have no internet. Download it elsewhere and pass --url, or set "
            f"--data-root to a folder that already has '{name}'", exc.reason) from exc
    digest = _sha256(part)
    if expected is not None and digest != expected:
        part.unlink()
        raise DataError(f"checksum mismatch for {name} from {url}: got {digest}, expected "
                        f"{expected}; the download was corrupt or the file changed - deleted, "
                        "run again to retry")
    if spec.md5 is not None and (got := md5_of(part)) != spec.md5:
        part.unlink()
        raise DataError(f"checksum mismatch for {name} from {url}: MD5 {got}, published "
                        f"{spec.md5}; the download was corrupt or the file changed - deleted, "
                        "run again to retry")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        staged = Path(tmp) / name
        staged.mkdir()
        if spec.medmnist:
            counts = unpack_npz(part, staged, **spec.medmnist)
            done = Unpacked(files=sum(counts.values()), counts=counts,
                            checked="archive MD5 equal to the one MedMNIST publishes")
        else:
            done = unpack(part, entries, staged, url)
        atomic_write_json(staged / "DOWNLOAD.json", {
            "url": url, "archive_sha256": digest, "archive_sha256_pinned": expected is not None,
            "files": done.files, "counts": dict(sorted(done.counts.items())),
            "left_out": done.left_out,
            "files_matching_manifest": done.matching, "verification": done.verification})
        if dest.is_dir():
            dest.rmdir()  # empty (checked above)
        shutil.move(str(staged), dest)
    part.unlink()
    log(f"{name}: {done.files} files in {dest} ({done.verification}"
        f"{'; archive sha256 pinned' if expected else ''})")
    return dest


def ensure_sets(entries, data_root: str | os.PathLike | None = None, *,
                timeout: float = 20.0) -> list[str]:
    """Download the known sets among ``entries`` (``"hymenoptera"``, ``"imagenette/val"``,
    paths ...) that are missing from the data root; returns the names fetched.

    Other entries must exist: a missing one fails first, before anything is downloaded.
    Sets that cannot be downloaded are reported together:

    Raises:
        DataError: a missing entry that is no known set (as the data loaders word it); one
            line per unreachable set (name, size, URL) and the ``--data-root`` remedy; other
            failures (checksum, archive) as :func:`fetch` raises them.
    """
    from transferscope.data.folder import resolve_folder

    root = config.data_root(data_root)
    wanted = []
    for entry in entries:
        entry = str(entry)
        name = entry.split("/")[0]
        if name in KNOWN_REMOTE and not Path(entry).expanduser().is_absolute() and \
                not Path(entry).exists():
            if name not in wanted and not _present(root / name):
                wanted.append(name)
        elif entry.lower().endswith(".csv"):  # a CSV set: the file must exist
            from transferscope.data.folder import _resolve_file

            if not _resolve_file(entry, data_root).is_file():
                raise DataError(f"CSV file not found: {entry!r} (looked in the current folder "
                                f"and under the data root {root}); give an existing "
                                "path,label[,split] file")
        else:
            resolve_folder(entry, None, data_root)  # raises "data folder not found: ..."
    fetched, offline = [], []
    total = sum(KNOWN_REMOTE[n].megabytes for n in wanted)
    if wanted:  # said before anything downloads (printed even without progress bars)
        print(f"downloading {len(wanted)} data set(s) into {root}, about {total:.0f} MB in all: "
              + ", ".join(f"{n} ({KNOWN_REMOTE[n].size.removeprefix('about ')})"
                          for n in wanted), file=sys.stderr, flush=True)
    for name in wanted:
        try:
            fetch(name, data_root, timeout=timeout)
            fetched.append(name)
        except ConnectError as exc:
            spec = KNOWN_REMOTE[name]
            offline.append(f"  {name}: {spec.description}; {spec.size} from "
                           f"{source_url(name)} ({exc.reason or 'unreachable'})")
    if offline:
        raise DataError(
            f"{len(offline)} data set(s) missing from {root} and not downloadable (of about "
            f"{total:.0f} MB to download):\n"
            + "\n".join(offline) + "\n"
            f"Point --data-root (or ${config.DATA_ENV}) at a folder that has them, or download "
            f"them elsewhere and run `transferscope data fetch NAME --url URL` (file:// works).")
    return fetched

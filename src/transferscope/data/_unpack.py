"""Unpack the pinned files of a data-set archive (zip or tar) and check them against a manifest.

A manifest lists ``sha256  relative/path`` lines (``#`` lines are comments). Archive members
are matched to manifest entries by their path *without extension* below one common folder
(``hymenoptera_data/``, ``imagenette2-160/``, ...), found automatically; members that are not
in the manifest are left out. Only regular files are written (no links, devices or paths
leaving the folder), streamed and hashed on the way.

What can be checked, and is:
- names and counts: every manifest entry must be in the archive (else the archive is not the
  expected release);
- contents: when every file's sha256 matches the manifest the copy is verified byte for byte;
  when none does, the archive holds different encodings of the same images (e.g. upstream
  originals, while the manifest was made from re-encoded copies), which the manifest cannot
  check - recorded as such; a mix of matching and differing files is corruption and fails.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from transferscope.errors import DataError

__all__ = ["read_manifest", "unpack", "Unpacked"]


def read_manifest(path: Path) -> dict[str, tuple[str, str]]:
    """``{archive path without extension: (sha256, path)}`` of a ``SHA256SUMS``-style file.

    A line may name a third field, ``sha256  path  archive/path``: the file is unpacked from
    ``archive/path`` to ``path`` (a prepared split that regroups upstream's files).

    >>> import tempfile, os
    >>> p = Path(tempfile.mkdtemp()) / "m.sha256"
    >>> _ = p.write_text("# comment\\n" + "ab" * 32 + "  train/ants/x.jpg\\n")
    >>> read_manifest(p)["train/ants/x"][1]
    'train/ants/x.jpg'
    """
    entries = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, sep, rel = line.partition("  ")
        rel, _, upstream = rel.partition("  ")
        if not sep or len(digest) != 64:
            raise DataError(f"{path}, line {n}: expected '<sha256>  <path>'")
        entries[_key(upstream or rel)] = (digest.lower(), rel)
    return entries


def _key(rel: str) -> str:
    p = PurePosixPath(rel)
    return str(p.with_suffix("")) if p.suffix else str(p)


@dataclass
class Unpacked:
    files: int = 0
    matching: int = 0  # files whose sha256 equals the manifest's
    differing: list[str] = field(default_factory=list)
    left_out: int = 0  # archive files not in the manifest
    counts: dict[str, int] = field(default_factory=dict)  # folder -> files written
    checked: str = ""  # how the files were verified when not against a manifest

    @property
    def verification(self) -> str:
        if self.checked:
            return self.checked
        if self.matching == self.files:
            return "every file's sha256 matches the pinned manifest"
        return ("file names and counts match the pinned manifest; the contents are other "
                "encodings of the images (the manifest pins re-encoded copies), so only the "
                "archive sha256 can pin them")


def _members(path: Path):
    """Yield (name, size, open-callable) for the regular files of a zip or tar archive."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0o170000
                if info.is_dir() or mode not in (0, 0o100000):  # links and others: skip
                    continue
                yield info.filename, (lambda i=info: zf.open(i))
        return
    try:
        tf = tarfile.open(path, "r:*")
    except tarfile.TarError as exc:
        raise DataError(f"{path} is neither a zip nor a tar archive ({exc}); the download "
                        "is not the data set - check the URL") from exc
    with tf:
        for info in tf:
            if info.isfile():
                yield info.name, (lambda i=info: tf.extractfile(i))


def unpack(archive: Path, manifest: dict[str, tuple[str, str]], dest: Path,
           source: str) -> Unpacked:
    """Write the manifest's files from ``archive`` under ``dest``; check names and contents.

    Raises:
        DataError: unsafe member paths, missing pinned files, or partly differing contents;
            the message names ``source`` (the URL) and what to do.
    """
    root: str | None = None
    done = Unpacked()
    seen: set[str] = set()
    for name, opener in _members(archive):
        clean = name[2:] if name.startswith("./") else name
        norm = posixpath.normpath(clean)
        if clean.startswith("/") or norm == ".." or norm.startswith("../") or "\\" in clean:
            raise DataError(f"{source} contains an unsafe path {name!r}; not unpacking it")
        key = _key(norm)
        if root is None:
            parts = key.split("/")
            for i in range(len(parts)):
                if "/".join(parts[i:]) in manifest:
                    root = "/".join(parts[:i])
                    break
        prefix = root + "/" if root else ""
        rel_key = key[len(prefix):] if root is not None and key.startswith(prefix) else None
        if rel_key is None or rel_key not in manifest or rel_key in seen:
            done.left_out += 1
            continue
        seen.add(rel_key)
        rel = norm[len(prefix):]
        if _key(manifest[rel_key][1]) != rel_key:  # regrouped: the manifest's path, the
            rel = str(PurePosixPath(manifest[rel_key][1]).with_suffix(  # archive's extension
                PurePosixPath(norm).suffix))
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with opener() as src, open(out, "wb") as fh:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                fh.write(chunk)
        done.files += 1
        folder = posixpath.dirname(rel) or "."
        done.counts[folder] = done.counts.get(folder, 0) + 1
        if h.hexdigest() == manifest[rel_key][0]:
            done.matching += 1
        else:
            done.differing.append(rel)
    missing = sorted(set(manifest) - seen)
    if missing:
        raise DataError(f"{source} lacks {len(missing)} of the {len(manifest)} pinned files "
                        f"(e.g. {manifest[missing[0]][1]}); it is not the expected release - "
                        "check the URL or pass a mirror of it with --url")
    if done.matching and done.differing:
        raise DataError(f"{source}: {len(done.differing)} of {done.files} files differ from "
                        f"their pinned sha256 (e.g. {done.differing[0]}) while the others "
                        "match; the copy is corrupt or altered - use another mirror")
    return done

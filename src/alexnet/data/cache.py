"""The user cache: decoded image sets, unpacked archives and downloads, and how to clear it.

``$ALEXNET_CACHE``, else ``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``, holding
``decoded/`` (uint8 tensors of image folders, so a data set is decoded once), ``extracted/``
(archives unpacked once), ``downloads/`` and ``native/`` (compiled kernels, see native.py).
``alexnet cache`` shows it, ``alexnet cache clear`` removes from it what alexnet wrote: the
names each part holds are patterns (``WRITTEN``) built beside the code that makes them, and
checked when a name is made, so the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet.data.imageset import ImageSet
from alexnet.errors import UserError
from alexnet.files import cache_dir, remove, remove_abandoned

PARTS = ("decoded", "extracted", "downloads", "native")
ORIGIN_HEX, KEY_HEX = 8, 20  # hex digits of origin_key and files_key, in the names below


def _hex(digits: int) -> str:
    return f"[0-9a-f]{{{digits}}}"


# The names alexnet writes in each part of the cache, whole (re.fullmatch); cache clear removes
# these and nothing else. The names of decoded/ and extracted/ are made here, each checked
# against its pattern as it is made (_check_name), so a new form of name fails at once rather
# than being kept by every clear; those of downloads/ and native/, made in cifar10.py,
# download.py and ops/native.py, are checked by tests that run that code (test_data.py).
# decoded: cached_pair's "<tag>-<origin_key>-<files_key>.pt", the tag being imagefolder's
# "<source>-<size>-<channels>" (size None: images kept at their own size), and its temporary
# ".<that name>.<pid>.tmp".
DECODED = rf"[a-z0-9_]+-(?:\d+|None)-\d+-{_hex(ORIGIN_HEX)}-{_hex(KEY_HEX)}\.pt"
# extracted: extract's folder "<archive name up to its first dot>-<origin_key>-<size>-<mtime_ns>",
# and its temporary "<that name>.<pid>.part".
EXTRACTED = rf"[^.]*-{_hex(ORIGIN_HEX)}-\d+--?\d+"
# downloads: the files fetched into downloads/ (cifar10._official_archive), and download's
# temporary "<name>.part" beside each.
DOWNLOADS = ("cifar-10-python.tar.gz",)
# native: native.load's build folders "<csrc file's stem>-<12 hex digits of its key>".
NATIVE = r"[a-z0-9_]+-[0-9a-f]{12}"
WRITTEN = {
    "decoded": re.compile(rf"(?:{DECODED})|\.(?:{DECODED})\.\d+\.tmp"),
    "extracted": re.compile(rf"(?:{EXTRACTED})(?:\.\d+\.part)?"),
    "downloads": re.compile(rf"(?:{'|'.join(map(re.escape, DOWNLOADS))})(?:\.part)?"),
    "native": re.compile(NATIVE),
}


def _check_name(part: str, path: Path) -> Path:
    """``path``, a name alexnet is about to write in cache ``part``, if ``WRITTEN`` knows it;
    else a ValueError (a bug: cache clear would keep the file forever)."""
    if not WRITTEN[part].fullmatch(path.name):
        raise ValueError(f"{path.name!r}: not a name cache clear removes from {part}/; update "
                         "WRITTEN in alexnet/data/cache.py with the code that made it")  # fmt: skip
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_key(files: Iterable[Path], *settings: object) -> str:
    """A key that changes when any file is added, removed, renamed or rewritten (its size or
    modification time changes), or when a decode setting changes."""
    h = hashlib.sha256(repr(settings).encode())
    for path in files:
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError as exc:  # a broken link or a loop: skipped and listed when decoded
            stamp = f"unreadable:{exc.errno}"
        h.update(f"{os.fsencode(path)!r}:{stamp}\n".encode())
    return h.hexdigest()[:KEY_HEX]


def _pack(s: ImageSet) -> dict:
    return {"images": s.images, "labels": s.labels, "classes": s.classes, "source": s.source,
            "skipped": [list(x) for x in s.skipped]}  # fmt: skip


def _unpack(b: dict) -> ImageSet:
    skipped = [(str(p), str(why)) for p, why in b["skipped"]]
    return ImageSet(b["images"], b["labels"], list(b["classes"]), b["source"], skipped)


def origin_key(path: Path) -> str:
    """A short key of where data comes from, its absolute path: the name of each cached copy
    starts with it, so a newer copy of the same folder or archive replaces the older."""
    return sha256_bytes(os.fsencode(path.resolve()))[:ORIGIN_HEX]


def remove_older(new: Path, prefix: str) -> None:
    """Every cached copy named ``prefix*`` but ``new``: copies of the same data made before its
    files changed, which nothing reads again (a folder edited ten times once left ten copies
    of itself, gigabytes each for ImageNet)."""
    import glob

    for old in new.parent.glob(glob.escape(prefix) + "*"):
        if old != new and not old.name.endswith((".tmp", ".part")):  # another process's, live
            with contextlib.suppress(OSError):
                remove(old)


def cached_pair(
    tag: str, origin: Path, key: str, build: Callable[[], tuple[ImageSet, ImageSet]]
) -> tuple[ImageSet, ImageSet]:
    """``build()`` once per ``key``, then the uint8 tensors from the cache (loaded with
    weights_only, so a tampered cache file cannot run code; a damaged one is rebuilt). The
    copy replaces the older copies of the same ``origin`` and ``tag``."""
    prefix = f"{tag}-{origin_key(origin)}-"
    path = _check_name("decoded", cache_dir() / "decoded" / f"{prefix}{key}.pt")
    if path.is_file():
        try:
            blob = torch.load(path, weights_only=True)
            return _unpack(blob["train"]), _unpack(blob["test"])
        except Exception:  # a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    train, test = build()
    tmp = _check_name("decoded", path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:  # a file object: torch reports a full disk as OSError then
            torch.save({"train": _pack(train), "test": _pack(test)}, f)
        os.replace(tmp, path)
    except (OSError, RuntimeError):  # a full or read-only cache only costs the next run a decode
        tmp.unlink(missing_ok=True)
    else:
        remove_older(path, prefix)
    return train, test


def unpacked(path: Path, help_text: str) -> Path:
    """``path`` if it is a folder, its unpacked copy if it is a .tar(.gz) archive."""
    if path.is_dir():
        return path
    if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise UserError(f"{path}: not a folder or a .tar(.gz) archive; {help_text}")
    return extract(path)


def extract(archive: Path) -> Path:
    """Unpack a .tar(.gz) once into the cache, safely (no paths outside the target)."""
    st = archive.stat()
    prefix = f"{archive.name.split('.')[0]}-{origin_key(archive)}-"
    target = _check_name(
        "extracted", cache_dir() / "extracted" / f"{prefix}{st.st_size}-{st.st_mtime_ns}"
    )
    if (target / ".complete").exists():
        return target
    remove_abandoned(target.with_name(f"{target.name}.*.part"))  # left by killed processes
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")  # each process its own
    _check_name("extracted", tmp)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"{archive}: cannot unpack ({exc}); check the file or unpack it yourself"
        ) from None
    except BaseException:  # Ctrl-C or SIGTERM midway: no half-unpacked copy is left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    remove_older(target, prefix)
    return target


def _size(path: Path) -> int:
    """Bytes of the regular files at or under ``path``; a link (at any depth) holds none."""
    if path.is_symlink():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def cache_usage() -> dict[str, int]:
    """Bytes held in each part of the cache."""
    root = cache_dir()
    return {part: _size(root / part) if (root / part).exists() else 0 for part in PARTS}


def written_here(part: str, entry: Path) -> bool:
    """Whether ``entry`` of cache ``part`` is one alexnet writes, by its whole name (``WRITTEN``)
    and kind: clearing removes those and nothing else, so a mistaken ALEXNET_CACHE pointed at a
    folder of one's own files (with a "decoded" or "native" folder in it) loses none of them,
    nor does a thesis.pt kept in decoded/. A link named so is removed, never what it points to."""
    if not WRITTEN[part].fullmatch(entry.name):
        return False
    folder = entry.is_dir() and not entry.is_symlink()
    if part == "extracted":  # unpacked whole, or a killed unpacking's
        return folder and (entry.name.endswith(".part") or (entry / ".complete").exists())
    if part == "native":  # a build folder holds the lock its builds take
        return folder and (entry / "lock").exists()
    return not folder


@dataclass
class Clearing:
    """What clearing parts of the cache finds there: ``remove``, what alexnet wrote; ``kept``,
    everything else in the parts (the user's); ``linked``, parts that are symbolic links, left
    whole: what they point to is not alexnet's to empty (a folder of one's models once lost
    every .pt in it)."""

    remove: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    linked: list[Path] = field(default_factory=list)

    def size(self) -> int:
        """Bytes clearing frees: the files in ``remove``, links and all they hold not followed."""
        return sum(_size(path) for path in self.remove)


def clearing(parts: Iterable[str] = PARTS) -> Clearing:
    """What :func:`clear_cache` of ``parts`` would remove and keep; a part not known is refused."""
    parts = list(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:  # before anything is deleted
        raise UserError(f"unknown cache part {unknown[0]!r}; valid: {', '.join(PARTS)}")
    found = Clearing()
    for part in parts:
        path = cache_dir() / part
        if path.is_symlink():
            found.linked.append(path)
            continue
        if not path.is_dir():
            continue
        for entry in sorted(path.iterdir()):
            (found.remove if written_here(part, entry) else found.kept).append(entry)
    return found


def clear_cache(parts: Iterable[str] = PARTS) -> int:
    """Delete what alexnet wrote in the given parts of the cache (see written_here), and each
    part's folder once empty; returns the bytes of the files removed. A part that is a link
    (to a bigger disk, or to a folder of one's own) is left whole: the link and all behind it."""
    parts = list(parts)
    freed = 0
    for entry in clearing(parts).remove:
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile (another clear)
            held = _size(entry)
            if entry.parent.name == "extracted" and not entry.name.endswith(".part"):
                # Set aside whole first: an unpacked folder whose removal a signal cut short
                # had lost its .complete, and the next clear kept it as not alexnet's.
                aside = entry.with_name(f"{entry.name}.{os.getpid()}.part")
                entry = entry.rename(_check_name("extracted", aside))
            remove(entry)  # a link itself, never what it points to (shutil.rmtree's rule too)
            freed += held
    for part in parts:
        path = cache_dir() / part
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    return freed

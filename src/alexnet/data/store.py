"""A prepared image store: every image decoded once, resized as the paper did, read by the
training loader without per-image decoding (``alexnet prepare`` writes it; prepare.py).

Layout of a store folder::

    store.json               format, layout, image size, classes, splits (written last)
    stats.pt                 the training split's mean image and RGB PCA (data/stats.py)
    <split>/chunk-NNNNN.json one chunk of the sorted file list: what it kept, skipped, its sha256
    <split>/chunk-NNNNN.data the chunk's images ("raw": uint8 H x W x 3 each; "jpeg": JPEG bytes)
    <split>/chunk-NNNNN.sums the chunk's pixel sums, merged into stats.pt
    <split>/index.pt         every kept image: chunk, byte offset, length, label

Three layouts, one reader:
- ``raw``: uint8 256x256x3 per image, the form the paper trained from (about 252 GB for
  ILSVRC-2012, more than its JPEGs). A training crop is one ``pread`` of the crop's band of
  rows: no decoding, no Python per pixel, and page cache rather than process memory holds it.
- ``jpeg``: the same 256x256 images re-encoded as JPEG (quality 90; about a sixth of ``raw``),
  decoded at each use.
- ``files``: no copies; the index names the original files, decoded and resized at each use.
  Bad files were found and listed when the store was prepared; a file that breaks after that
  stops training with a line naming it, one that changed is named when a run starts.

Everything here is plain data (JSON, uint8 bytes, tensors loaded with ``weights_only``), so a
store from someone else cannot run code. Checksums (sha256 per chunk) are written by prepare
and checked by ``alexnet prepare --verify``.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alexnet.data.imageset import skip_line, subset_indices
from alexnet.data.source import DataSource, Request
from alexnet.data.stats import PixelStats
from alexnet.errors import UserError

STORE_FORMAT = 1
OPEN_CHUNKS = 64  # chunk files a process keeps open (StoreSplit._fd)
LAYOUTS = ("raw", "jpeg", "files")
STORE_FILE = "store.json"
STATS_FILE = "stats.pt"


class StoreError(UserError):
    """A store that cannot be read; the message names the file and what to do."""


def is_store(path: Path) -> bool:
    return (Path(path) / STORE_FILE).is_file()


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot read ({exc}); run alexnet prepare again") from None


def file_stamp(path: str) -> list[int] | None:
    """An original file's size and modification time, as a ``files`` store records them."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def changed_originals(record: dict) -> list[str]:
    """A ``files`` store reads its originals at each use: those whose size or modification
    time differs from the chunk's record (other layouts, and stores made before the record
    was kept: none)."""
    stamps = record.get("stamps") or []
    return [row[0] for row, stamp in zip(record["kept"], stamps, strict=False)
            if file_stamp(row[0]) != stamp]  # fmt: skip


def load_tensors(path: Path) -> dict:
    """A dict of tensors saved by this package, loaded without running any code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StoreError(f"{path}: cannot read ({type(exc).__name__}); run alexnet prepare "
                         "again") from None  # fmt: skip


@dataclass
class StoreSplit:
    """One split of a store: its labels and a reader of its images, by index.

    The same interface as an in-memory :class:`~alexnet.data.imageset.ImageSet` where the
    training code needs it (``labels``, ``classes``, ``skipped``, ``subset``); the images are
    read on demand by ``read_band`` (rows of the stored 256x256 image, H x W x C uint8)."""

    root: Path
    name: str
    layout: str
    size: int
    channels: int
    classes: list[str]
    chunk: torch.Tensor  # (N,) int32: the chunk file of each image
    offset: torch.Tensor  # (N,) int64: byte offset in it (raw, jpeg) or index into paths
    length: torch.Tensor  # (N,) int64: bytes (raw, jpeg)
    labels: torch.Tensor  # (N,) int64
    paths: list[str] = field(default_factory=list)  # files layout: the original files
    skipped: list[tuple[str, str]] = field(default_factory=list)
    max_pixels: int = 64_000_000  # files layout: the store's pixel limit
    _files: dict[int, int] = field(default_factory=dict, repr=False)  # chunk -> fd, per process
    _pid: int = field(default=0, repr=False)

    streamed = True  # read from disk at each use (ImageSet answers the same questions)

    @property
    def source(self) -> str:
        return f"{self.root}/{self.name}"

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of each stored image, the shape of its mean image."""
        return self.size, self.size, self.channels

    def pixel_stats(self) -> PixelStats:
        """The training set's mean image and colour PCA, as ``alexnet prepare`` computed them."""
        return open_store(self.root).stats()

    def evaluation_record(self) -> dict:
        """What evaluating a network trained on this split needs: the stored side and the
        class names, to read other images the same way."""
        return {"stored_size": self.size, "names": open_store(self.root).names}

    def read_stored(self, chosen: torch.Tensor):
        """Images ``chosen`` as stored (uint8, H x W x C), their labels, which could be read,
        and (path, reason) of the files of a folder that could not (counted, not fatal)."""
        full, ok, failed = [], [], []
        for i in chosen.tolist():
            try:
                full.append(self.decode(i))
                ok.append(True)
            except StoreError as exc:
                if not self.paths:  # a chunk of a raw or jpeg store: the store is damaged
                    raise
                full.append(torch.zeros(self.size, self.size, 3, dtype=torch.uint8))
                ok.append(False)
                path = self.paths[int(self.offset[i])]
                failed.append((path, str(exc).removeprefix(f"{path}: ")))
        return torch.stack(full), self.labels[chosen], torch.tensor(ok), failed

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: int) -> StoreSplit:
        keep = subset_indices(self.labels, count)
        return StoreSplit(self.root, self.name, self.layout, self.size, self.channels,
                          self.classes, self.chunk[keep], self.offset[keep], self.length[keep],
                          self.labels[keep], self.paths, self.skipped, self.max_pixels)  # fmt: skip

    def skip_summary(self, listed_in: Path | None = None) -> str | None:
        return skip_line(f"{self.source}: left out when the store was prepared", self.skipped,
                         listed_in)  # fmt: skip

    def staleness(self) -> str | None:
        """A ``files`` store's originals that changed since prepare read them, in one line:
        they are read as they are now, but the mean image, the PCA and the skip list are from
        before (``prepare --verify`` names them too; a stat per file, seconds for ILSVRC)."""
        if self.layout != "files" or not is_store(self.root):
            return None
        changed: list[str] = []
        for i in torch.unique(self.chunk).tolist():
            try:
                changed += changed_originals(
                    read_json(self.root / self.name / f"{chunk_name(i)}.json")
                )
            except (StoreError, KeyError, TypeError):
                continue  # an unreadable record: prepare --verify says so
        if not changed:
            return None
        return (f"warning: {self.source}: {len(changed)} of its original files changed since "
                f"alexnet prepare read them (e.g. {changed[0]}); the store's mean image, PCA "
                "and skip list are from before: run alexnet prepare again to update them")  # fmt: skip

    # -- reading ------------------------------------------------------------------------------

    def _fd(self, chunk: int) -> int:
        """An open descriptor of the chunk's data. At most ``OPEN_CHUNKS`` stay open per
        process (ILSVRC-2012's training split is 1,282 chunks, more than the usual limit of
        1,024 open files), the least recently used closed first."""
        if self._pid != os.getpid():  # a worker process opens its own descriptors
            self._files, self._pid = {}, os.getpid()
        fd = self._files.pop(chunk, None)
        if fd is None:
            if len(self._files) >= OPEN_CHUNKS:
                os.close(self._files.pop(next(iter(self._files))))
            path = self.root / self.name / f"{chunk_name(chunk)}.data"
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                hint = ("too many open files in this process: raise the limit (ulimit -n)"
                        if exc.errno == errno.EMFILE else "the store is incomplete or damaged: "
                        "check it with alexnet prepare --verify")  # fmt: skip
                raise StoreError(f"{path}: cannot open ({exc.strerror}); {hint}") from None
        self._files[chunk] = fd  # now the most recently used
        return fd

    def read_band(self, i: int, top: int, rows: int) -> torch.Tensor:
        """Rows ``top`` to ``top + rows`` of image ``i`` as uint8 (rows, size, channels)."""
        if self.layout == "raw":
            # One pread of the band: the crop's rows are contiguous in an H x W x C image, so
            # a 227-row crop reads 89% of the image and nothing else.
            row = self.size * self.channels
            out = np.empty((rows, self.size, self.channels), dtype=np.uint8)
            start = int(self.offset[i]) + top * row
            got = os.preadv(self._fd(int(self.chunk[i])), [out], start)
            if got != out.nbytes:
                raise self._damaged(i)
            return torch.from_numpy(out)
        return self.decode(i)[top : top + rows]

    def decode(self, i: int) -> torch.Tensor:
        """The whole stored image ``i`` as uint8 (size, size, channels)."""
        from alexnet.data.images import decode_image, resize_image

        if self.layout == "raw":
            return self.read_band(i, 0, self.size)
        if self.layout == "jpeg":
            data = os.pread(self._fd(int(self.chunk[i])), int(self.length[i]), int(self.offset[i]))
            try:
                if len(data) != int(self.length[i]):
                    raise UserError("cut short")
                image = decode_jpeg_bytes(data, self.channels)
            except (RuntimeError, ValueError):
                raise self._damaged(i) from None
        else:
            path = Path(self.paths[int(self.offset[i])])
            image, why = decode_image(path, self.channels, self.size, self.max_pixels)
            if image is None:
                again = ("; it was readable when the store was prepared: run alexnet prepare "
                         "again") if is_store(self.root) else ""  # fmt: skip
                raise StoreError(f"{path}: {why}{again}")
            image = resize_image(image, self.size)
        return image.permute(1, 2, 0)

    def _damaged(self, i: int) -> StoreError:
        path = self.root / self.name / f"{chunk_name(int(self.chunk[i]))}.data"
        return StoreError(f"{path}: image {i} of the split is cut short or corrupt; check the "
                          "store with alexnet prepare --verify")  # fmt: skip

    def __getstate__(self) -> dict:  # worker processes open their own descriptors
        return {**self.__dict__, "_files": {}, "_pid": 0}


def decode_jpeg_bytes(data: bytes, channels: int) -> torch.Tensor:
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)


@dataclass
class Store:
    root: Path
    meta: dict

    @property
    def layout(self) -> str:
        return self.meta["layout"]

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def names(self) -> list[str]:
        return list(self.meta.get("names") or self.meta["classes"])

    @property
    def splits(self) -> list[str]:
        return sorted(self.meta["splits"])

    def split(self, name: str, *, chunk_sizes: bool = True) -> StoreSplit:
        """The split ``name``, checked against store.json and, with ``chunk_sizes``, its chunk
        files' sizes (``prepare --verify`` checks their every byte instead)."""
        if name not in self.meta["splits"]:
            raise StoreError(f"{self.root}: has no {name!r} split (it has "
                             f"{', '.join(self.splits) or 'none'}); prepare it with alexnet "
                             f"prepare SRC {self.root} --split {name}")  # fmt: skip
        index = load_tensors(self.root / name / "index.pt")
        info = self.meta["splits"][name]
        self._check_agrees(name, info, index)
        if chunk_sizes:
            self._check_chunk_sizes(name, index)
        skipped = [(str(p), str(why)) for p, why in info.get("skipped", [])]
        return StoreSplit(self.root, name, self.layout, self.size, int(self.meta["channels"]),
                          self.classes, index["chunk"], index["offset"], index["length"],
                          index["label"], list(index.get("paths", [])), skipped,
                          int(self.meta.get("max_pixels", 64_000_000)))  # fmt: skip

    def stats(self) -> PixelStats:
        path = self.root / STATS_FILE
        if not path.is_file():
            raise StoreError(f"{self.root}: no training statistics (mean image, PCA) yet; they "
                             "come with its train split: alexnet prepare SRC "
                             f"{self.root} --split train")  # fmt: skip
        stats = PixelStats.from_dict(load_tensors(path))
        shape = (self.size, self.size, int(self.meta["channels"]))
        if tuple(stats.mean_image.shape) != shape:  # an edited size read every image askew
            raise StoreError(f"{self.root / STORE_FILE}: says images of {shape}, but its mean "
                             f"image is {tuple(stats.mean_image.shape)}; a damaged or edited "
                             "store: prepare it again")  # fmt: skip
        return stats

    def _check_agrees(self, name: str, info: dict, index: dict) -> None:
        """store.json agrees with the split's index: its image count, and (raw layout) the
        bytes of an image at its size. An edited size or count passed --verify, and training
        read every image askew (36x36 pixels out of 40x40 rows) without a word."""
        count = len(index["label"])
        bytes_each = self.size * self.size * int(self.meta["channels"])
        askew = self.layout == "raw" and count and bool((index["length"] != bytes_each).any())
        if info["images"] != count or askew:
            said = f"{info['images']} images" if info["images"] != count else \
                f"images of {self.size} pixels ({bytes_each} bytes)"  # fmt: skip
            raise StoreError(f"{self.root / STORE_FILE}: says {said} where its {name} index "
                             f"holds {count} of {int(index['length'][0]) if count else 0} bytes; "
                             "a damaged or edited store: prepare it again")  # fmt: skip
        if count and not 0 <= int(index["label"].min()) <= int(index["label"].max()) < len(
            self.classes
        ):
            raise StoreError(f"{self.root / STORE_FILE}: names {len(self.classes)} classes, but "
                             f"its {name} index has labels up to {int(index['label'].max())}; a "
                             "damaged or edited store: prepare it again")  # fmt: skip

    def _check_chunk_sizes(self, name: str, index: dict) -> None:
        """Each chunk file holds the bytes its index points to: a chunk cut short was found
        only when training read its last images, after an epoch (a stat per chunk)."""
        if self.layout == "files" or not len(index["label"]):
            return
        ends = (index["offset"] + index["length"]).to(torch.int64)
        last = torch.zeros(int(index["chunk"].max()) + 1, dtype=torch.int64)
        last.scatter_reduce_(0, index["chunk"].to(torch.int64), ends, "amax")
        for chunk, end in enumerate(last.tolist()):
            path = self.root / name / f"{chunk_name(chunk)}.data"
            try:
                have = path.stat().st_size
            except OSError:
                have = -1
            if end and have < end:
                said = "missing" if have < 0 else f"{have} bytes where its index needs {end}"
                raise StoreError(f"{path}: {said}; the store is incomplete or damaged: check it "
                                 "with alexnet prepare --verify, then prepare again")  # fmt: skip


def open_store(root: Path | str) -> Store:
    root = Path(root)
    if not is_store(root):
        hint = ("it looks like an image folder: prepare it first with alexnet prepare "
                f"{root} STORE_DIR" if (root / "train").is_dir() else "no store.json there")  # fmt: skip
        raise StoreError(f"{root}: not a prepared image store ({hint})")
    meta = read_json(root / STORE_FILE)
    missing = [k for k in ("layout", "size", "channels", "classes", "splits") if k not in meta]
    if not isinstance(meta, dict) or missing:
        raise StoreError(f"{root / STORE_FILE}: not a store's record (no {', '.join(missing)}); "
                         "prepare the store again")  # fmt: skip
    if meta.get("format", 0) > STORE_FORMAT:
        raise StoreError(f"{root}: store format {meta.get('format')} is newer than this alexnet "
                         f"reads ({STORE_FORMAT}); upgrade alexnet")  # fmt: skip
    if meta.get("layout") not in LAYOUTS:
        raise StoreError(f"{root / STORE_FILE}: unknown layout {meta.get('layout')!r}")
    wrong = _wrong_field(meta)
    if wrong:  # an edited record: a traceback deep in training, or names that do not fit
        raise StoreError(f"{root / STORE_FILE}: its {wrong}; a damaged or edited store: "
                         "prepare it again")  # fmt: skip
    return Store(root, meta)


def _whole(value, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _wrong_field(meta: dict) -> str | None:
    """What in a store's record is not what prepare writes, in words; None if all is."""
    classes, names = meta["classes"], meta.get("names", meta["classes"])
    fields = (("size", _whole(meta["size"], 1, 1 << 16), "a whole number of pixels"),
              ("channels", meta["channels"] in (1, 3) and type(meta["channels"]) is int, "1 or 3"),
              ("classes", isinstance(classes, list) and classes and len(set(map(str, classes)))
               == len(classes) and all(isinstance(c, str) for c in classes), "a list of distinct names"),
              ("names", isinstance(names, list) and isinstance(classes, list) and len(names) ==
               len(classes) and all(isinstance(n, str) for n in names), "one name per class"),
              ("splits", isinstance(meta["splits"], dict), "a table of splits"))  # fmt: skip
    for key, fine, what in fields:
        if not fine:
            return f"{key} is {str(meta[key] if key != 'names' else names)[:60]}, not {what}"
    for split, info in meta["splits"].items():
        if not (isinstance(info, dict) and _whole(info.get("images"), 0, 1 << 40)
                and _whole(info.get("chunks"), 0, 1 << 30)):  # fmt: skip
            return f"{split} split is {str(info)[:60]}, not its image and chunk counts"
    return None


def _load(request: Request) -> tuple[StoreSplit, StoreSplit]:
    if not request.root:
        raise UserError("the store source needs --data STORE_DIR (made by alexnet prepare)")
    store = open_store(request.root)
    channels = int(store.meta["channels"])
    if request.channels not in (0, channels):
        raise UserError(f"data.channels: {request.root} holds {channels}-channel images")
    test = "test" if "test" in store.splits and "val" not in store.splits else "val"
    return store.split("train"), store.split(test)


# ILSVRC-2012's per-channel statistics (torchvision's): the mean of normalise = "channel", and
# under "mean-image" the divisor after the mean image is subtracted.
SOURCE = DataSource("store", _load, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                    stored_larger=True)  # fmt: skip

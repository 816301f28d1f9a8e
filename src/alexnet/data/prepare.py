"""``alexnet prepare SRC OUT``: decode and resize every image once into a store (store.py).

The sorted file list of a split is cut into chunks of ``chunk`` files; worker processes
prepare chunks in parallel, each one decoding its files (``images.decode_image``: bad files
are skipped with the reason), rescaling the short side to 256 and cropping the central
256x256 (section 2 of the paper), and writing its data, its pixel sums and last its JSON
record, each atomically. A chunk with a record is finished, so a killed run resumes with the
chunks it had not finished, and, since each chunk depends only on its files, produces the
same store as an uninterrupted run. When every chunk of a split is done its index is written,
and for the train split the mean image and RGB PCA (stats.py) from the merged sums.

Sources and class order: layouts.py (ImageFolder trees, ILSVRC's flat val/ with Kaggle's or
the devkit's labels, flat ``<wnid>_*.JPEG`` files).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import torch

from alexnet.data.images import MAX_PIXELS, decode_image, resize_image
from alexnet.data.layouts import class_map, is_flat, labelled_splits, source_root, split_files
from alexnet.data.stats import PixelSums
from alexnet.data.store import (
    LAYOUTS,
    STATS_FILE,
    STORE_FILE,
    STORE_FORMAT,
    StoreError,
    changed_originals,
    chunk_name,
    file_stamp,
    load_tensors,
    open_store,
    read_json,
)
from alexnet.errors import UserError
from alexnet.files import NAMES, remove, remove_abandoned, written
from alexnet.locks import held
from alexnet.processes import die_with, quiet_resource_tracker
from alexnet.progress import bar


@dataclass(frozen=True)
class Plan:
    """What every chunk of a store is made with; fixed when the store is begun."""

    layout: str = "raw"
    size: int = 256
    channels: int = 3
    quality: int = 90  # jpeg layout
    max_pixels: int = MAX_PIXELS
    chunk: int = 1000  # files per chunk

    def check(self) -> None:
        """Every value in range, before anything is written."""
        if self.layout not in LAYOUTS:
            raise UserError(f"--layout {self.layout}: valid: {', '.join(LAYOUTS)}")
        for option, value, low, high in (("--size", self.size, 1, 65_536),
                                         ("--quality", self.quality, 1, 100),
                                         ("--chunk", self.chunk, 1, 1_000_000)):  # fmt: skip
            if not low <= value <= high:
                raise UserError(f"{option} {value}: must be from {low} to {high}")
        if not 1 <= self.max_pixels <= 10**10:
            raise UserError(f"--max-megapixels {self.max_pixels / 1e6:g}: must be from 0.000001 "
                            "(one pixel) to 10000")  # fmt: skip


@dataclass(frozen=True)
class ChunkJob:
    out: Path
    split: str
    index: int
    files: tuple[str, ...]
    labels: tuple[int, ...]
    plan: Plan

    @property
    def key(self) -> str:
        """Which files with which labels: a finished chunk of another list is not this one."""
        listing = "".join(f"{f}\t{lab}\n" for f, lab in zip(self.files, self.labels, strict=True))
        return hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()

    def done(self) -> bool:
        """Whether this chunk was finished: its record reads, is of these files, and its data
        and sums are there in full. A chunk damaged or cut short is made again."""
        folder, name = self.out / self.split, chunk_name(self.index)
        try:
            record = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
            data = folder / f"{name}.data"
            size = data.stat().st_size if data.exists() else 0
            return (record.get("job") == self.key and size == record["bytes"]
                    and (folder / f"{name}.sums").is_file() and not changed_originals(record))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return False


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_write(path: Path, data: bytes | bytearray) -> None:
    """``data`` in ``path``, whole or not at all: written beside it, flushed to disk, renamed
    (files.written: a full disk is one line naming the file, and nothing half-written stays)."""
    with written(path, need=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------
# What to prepare


# --------------------------------------------------------------------------------------------
# One chunk (in a worker process)


def prepare_chunk(job: ChunkJob) -> tuple[int, int]:
    """Decode, resize and write one chunk; returns (files, kept)."""
    from torchvision.io import encode_jpeg

    p, folder = job.plan, job.out / job.split
    sums, data, kept, skipped, stamps = PixelSums(), bytearray(), [], [], []
    for path, label in zip(job.files, job.labels, strict=True):
        image, why = decode_image(Path(path), p.channels, p.size, p.max_pixels)
        if image is None:
            skipped.append([path, why])
            continue
        image = resize_image(image, p.size)
        hwc = image.permute(1, 2, 0).contiguous()
        sums.add(hwc[None])
        if p.layout == "raw":
            blob = hwc.numpy().tobytes()
        elif p.layout == "jpeg":
            with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec instead
                warnings.simplefilter("ignore", DeprecationWarning)
                blob = encode_jpeg(image, quality=p.quality).numpy().tobytes()
        else:  # files: the original is read at each use; --verify checks it is unchanged
            blob = b""
            stamps.append(file_stamp(path))
        kept.append([path, label, len(data), len(blob)])
        data += blob
    name = chunk_name(job.index)
    if p.layout != "files":
        atomic_write(folder / f"{name}.data", data)
    # Saved through memory: torch.save names the entries of its zip after the file written,
    # and a temporary file's name (with the writer's pid) would make the bytes differ.
    atomic_write(folder / f"{name}.sums", _saved(sums.to_dict()))
    record = {"job": job.key, "files": len(job.files), "kept": kept, "skipped": skipped,
              "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    if p.layout == "files":
        record["stamps"] = stamps  # [size, mtime_ns] of each kept file
    atomic_write(folder / f"{name}.json", json.dumps(record).encode())  # last: the chunk is done
    return len(job.files), len(kept)


def _init_worker(parent: int) -> None:
    die_with(parent)  # a killed prepare left its workers running under PID 1
    torch.set_num_threads(1)  # the workers are the parallelism


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the workers now rather than after their chunks (a stop signal, a failed chunk):
    a chunk is written atomically, so one cut short is redone on the next run. The executor
    has no public way to end its running workers; ``_processes`` is its own table of them."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            process.kill()
    for process in processes:  # gone before their half-written files are removed
        with contextlib.suppress(OSError, AttributeError, ValueError, AssertionError):
            process.join(5)


def _remove_unfinished(jobs: list[ChunkJob]) -> None:
    """The files of chunks the stopped workers did not finish: a chunk's data and sums are
    written before its record, and a stop between them left 40 MB without a record (redone
    by the next run anyway). Temporary files of killed workers go too."""
    for job in jobs:
        if job.done():
            continue
        name = chunk_name(job.index)
        for suffix in (".data", ".sums"):
            path = job.out / job.split / f"{name}{suffix}"
            path.unlink(missing_ok=True)
            remove_abandoned(path.with_name(f".{name}.*.partial{suffix}"))


# --------------------------------------------------------------------------------------------
# A whole store


def begin_store(out: Path, plan: Plan, classes: list[str], names: list[str], src: Path) -> dict:
    """The store's record: made now, or read back (a resume) and checked against the plan."""
    path = out / STORE_FILE
    wanted = {"format": STORE_FORMAT, "layout": plan.layout, "size": plan.size,
              "channels": plan.channels, "quality": plan.quality, "max_pixels": plan.max_pixels,
              "chunk": plan.chunk, "classes": classes, "names": names}  # fmt: skip
    if path.is_file():
        meta = read_json(path)
        differs = [f"{k} {meta.get(k)!r}, not {v!r}" for k, v in wanted.items()
                   if k != "classes" and meta.get(k) != v]  # fmt: skip
        if meta.get("classes") != classes:
            differs.append("another class list")
        if differs:
            raise StoreError(f"{out}: was begun with other settings ({'; '.join(differs)}); use "
                             "the same options or another folder")  # fmt: skip
        return meta
    out.mkdir(parents=True, exist_ok=True)
    meta = {**wanted, "source": str(src), "splits": {}}
    atomic_write(path, json.dumps(meta, indent=1).encode())
    return meta


def prepare(
    src: Path,
    out: Path,
    *,
    splits: list[str] | None = None,
    plan: Plan = Plan(),
    workers: int = 0,
    chunk: int | None = None,
    progress: bool = True,
) -> dict:
    """Prepare the ``splits`` of ``src`` (default: every one with labels) into the store
    ``out``; returns the store's record. ``chunk`` overrides ``plan.chunk``."""
    plan = replace(plan, chunk=chunk) if chunk is not None else plan
    plan.check()
    if workers < 0:
        raise UserError(f"--workers {workers}: must be 0 or more")
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such folder or archive")
    src, out = source_root(src.resolve()), out.resolve()
    if out == src or src in out.parents:
        raise UserError(f"{out}: the store must not be inside the images it is made from")
    if out.is_dir() and not (out / STORE_FILE).is_file() and any(out.iterdir()):
        raise StoreError(f"{out}: a folder with other things in it, not a store; give a new or "
                         "empty folder (a store was written among image folders and runs)")  # fmt: skip
    classes, names = class_map(src)
    listings = {s: listed(src, s, classes) for s in splits or labelled_splits(src)}
    made, empty = not out.exists(), out.is_dir() and not any(out.iterdir())
    out.mkdir(parents=True, exist_ok=True)  # only once every split is known to have images
    try:
        with _held(out):
            meta = begin_store(out, plan, classes, names, src)
            for split, (pairs, skipped) in listings.items():
                meta = prepare_split(out, split, pairs, skipped, meta, plan, workers, progress)
    except BaseException:
        if (made or empty) and not finished_chunks(out):  # a failed start leaves no store
            for entry in [out] if made else list(out.iterdir()):
                with contextlib.suppress(OSError):
                    remove(entry)
        raise
    return meta


def finished_chunks(out: Path) -> int:
    """How many chunks of the store ``out`` are finished (a stopped run keeps them)."""
    return sum(1 for _ in out.glob("*/chunk-*.json"))


def listed(src: Path, split: str, classes: list[str]) -> tuple[list, list]:
    """The (file, label) pairs and the skipped files of a split, or a one-line error for a
    split with no images (before anything is written: a failed start leaves no store)."""
    if not is_flat(src) and not (src / split).is_dir():
        raise FileNotFoundError(f"{src / split}: no such folder")
    pairs, skipped = split_files(src, split, classes)
    if not pairs:
        first = f"; e.g. {skipped[0][0]} ({skipped[0][1]})" if skipped else ""
        raise StoreError(f"{src}: no images of the class list in its {split} split{first}")
    return pairs, skipped


def _held(out: Path):
    """The store to this process alone while it prepares: two at once would each write the
    store's record from what they read at their start, and one split would be lost."""
    return held(out, f"{out}: another alexnet prepare is writing it; wait for it to finish (it "
                     "prepares one split after the other)")  # fmt: skip


def prepare_split(out: Path, split: str, pairs: list, skipped: list, meta: dict, plan: Plan,
                  workers: int, progress: bool) -> dict:  # fmt: skip
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    _remove_partial(folder)  # a killed run's half-written files
    try:
        return _prepare_chunks(out, split, pairs, skipped, meta, plan, workers, progress)
    except BaseException:  # a signal or a failure: the workers' half-written chunks go too
        _remove_partial(folder)
        raise


def _remove_partial(folder: Path) -> None:
    """The store is held by this process alone (``_held``), so any temporary file in it is a
    half-written file of this run or of a killed one, never of a live writer."""
    for leftover in (*folder.glob(".*.partial*"), *folder.glob(".*.tmp")):  # .tmp: older versions
        leftover.unlink(missing_ok=True)


def _prepare_chunks(out: Path, split: str, pairs: list, skipped: list, meta: dict,
                    plan: Plan, workers: int, progress: bool) -> dict:  # fmt: skip
    step = plan.chunk
    jobs = [ChunkJob(out, split, i, tuple(p for p, _ in pairs[s : s + step]),
                     tuple(lab for _, lab in pairs[s : s + step]), plan)
            for i, s in enumerate(range(0, len(pairs), step))]  # fmt: skip
    todo = [j for j in jobs if not j.done()]
    done_files = sum(len(j.files) for j in jobs) - sum(len(j.files) for j in todo)
    counter = bar(total=len(pairs), initial=done_files, unit="img", desc=f"prepare {split}",
                  asked=progress)  # fmt: skip
    if workers > 0 and len(todo) > 1:
        context = get_context("spawn")  # a clean interpreter per worker: no forked threads
        quiet_resource_tracker()
        with ProcessPoolExecutor(workers, context, initializer=_init_worker,
                                 initargs=(os.getpid(),)) as pool:  # fmt: skip
            # The workers start during the submits, and keep a signal ignored when they start
            # (ignored signals survive exec): Ctrl-C to the terminal's process group printed
            # each starting worker's traceback. The parent stops them itself (_stop_workers).
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                futures = [pool.submit(prepare_chunk, j) for j in todo]
            finally:
                signal.signal(signal.SIGINT, interrupt)
            try:
                for future in as_completed(futures):
                    counter.update(future.result()[0])
            except BaseException:  # a chunk failed (a full disk...) or a signal: stop now
                _stop_workers(pool)
                _remove_unfinished(todo)
                raise
    else:
        for job in todo:
            counter.update(prepare_chunk(job)[0])
    counter.close()
    return finish_split(out, split, len(jobs), skipped, meta)


def finish_split(out: Path, split: str, chunks: int, skipped: list, meta: dict) -> dict:
    """The split's index from its chunk records; for train also the statistics; then the
    store's record names the split (the last write: a split it names is complete)."""
    folder = out / split
    rows, paths, sums = [], [], PixelSums()
    for i in range(chunks):
        record = read_json(folder / f"{chunk_name(i)}.json")
        for path, label, offset, length in record["kept"]:
            if meta["layout"] == "files":
                offset = len(paths)
                paths.append(path)
            rows.append((i, offset, length, label))
        skipped = skipped + [tuple(s) for s in record["skipped"]]
        sums.merge(PixelSums.from_dict(load_tensors(folder / f"{chunk_name(i)}.sums")))
    if not rows:  # its chunks hold nothing: removed, so a store of no split is not kept
        shutil.rmtree(folder, ignore_errors=True)
        raise StoreError(
            f"{folder}: no readable images"
            + (f"; e.g. {skipped[0][0]} ({skipped[0][1]})" if skipped else "")
        )
    table = torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)
    index = {"chunk": table[:, 0].int(), "offset": table[:, 1], "length": table[:, 2],
             "label": table[:, 3]}  # fmt: skip
    if paths:
        index["paths"] = paths
    atomic_write(folder / "index.pt", _saved(index))
    listing = "".join(f"{p}\t{why}\n" for p, why in skipped)
    atomic_write(folder / "skipped.txt", ("file\treason\n" + listing).encode("utf-8", NAMES))
    if split == "train":
        atomic_write(out / STATS_FILE, _saved(sums.finish().to_dict()))
    meta = {**meta, "splits": {**meta["splits"], split: {
        "images": len(rows), "chunks": chunks, "skipped": [list(s) for s in skipped]}}}  # fmt: skip
    atomic_write(out / STORE_FILE, json.dumps(meta, indent=1).encode())
    return meta


def verify_store(out: Path) -> list[str]:
    """Every chunk's data checked against its sha256; the problems found, one line each, each
    saying how to mend it."""
    store = open_store(out)
    meta, problems = store.meta, _unusable(store)
    for split, info in sorted(meta["splits"].items()):
        for i in range(info["chunks"]):
            name = out / split / chunk_name(i)
            remedy = (f"delete {name.name}.json and run alexnet prepare again to make that "
                      "chunk anew")  # fmt: skip
            try:
                record = read_json(name.with_suffix(".json"))
            except StoreError:
                problems.append(f"{name}.json: unreadable; run alexnet prepare again")
                continue
            data = name.with_suffix(".data")
            h = hashlib.sha256()
            if data.is_file():
                with open(data, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 22), b""):
                        h.update(block)
            elif meta["layout"] != "files":
                problems.append(f"{data}: missing; {remedy}")
                continue
            if h.hexdigest() != record.get("sha256"):
                problems.append(f"{data}: its sha256 differs from the one recorded when it was "
                                f"written; {remedy}")  # fmt: skip
            changed = changed_originals(record)
            if changed:
                problems.append(f"{name}.json: {len(changed)} of its original files changed or "
                                f"are gone since it was prepared (e.g. {changed[0]}); run "
                                "alexnet prepare again, which makes such chunks anew")  # fmt: skip
    return problems


def _unusable(store) -> list[str]:
    """What keeps training from reading ``store`` besides its chunks: no split at all (a
    prepare interrupted or failed before its first split was done), or a split's index or the
    statistics unreadable. Verified as sound, such stores were refused by train."""
    if not store.splits:
        return [f"{store.root}: no split is finished (its prepare was stopped or failed); run "
                "alexnet prepare again"]  # fmt: skip
    reads = [(store.root / n / "index.pt", lambda n=n: store.split(n, chunk_sizes=False))
             for n in store.splits]  # fmt: skip
    if "train" in store.splits:
        reads.append((store.root / STATS_FILE, store.stats))
    problems = []
    for path, read in reads:
        try:
            read()
        except StoreError as exc:
            problems.append(str(exc))
        except (KeyError, TypeError, ValueError):
            problems.append(f"{path}: not what alexnet prepare writes; run alexnet prepare again")
    return problems

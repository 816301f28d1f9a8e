"""Training batches per second per core: the paper's ImageNet preprocessing through this
package's loader, against torchvision's ``ImageFolder`` with PIL transforms doing the same
steps, on the 1,000 real ILSVRC JPEGs of ``../shared/data/imagenet-sample``.

Every case produces float batches ready for the network: rescale to 256 on the short side,
centre 256x256, subtract the training set's mean image, a random 227x227 crop, a random
horizontal flip, PCA colour noise (alpha ~ N(0, 0.1)), divide by the per-channel deviation.
Each case runs in its own process with one thread and no loader workers, so the figure is the
work per core; the processes take turns in rounds (machine.in_processes).

* ``torchvision``: ``torchvision.datasets.ImageFolder`` (PIL decoding) with ``Resize(256)``,
  ``CenterCrop(256)``, ``ToTensor``, the mean image subtracted, ``RandomCrop(227)``,
  ``RandomHorizontalFlip``, the PCA noise as a per-image tensor transform and ``Normalize``,
  batched by ``torch.utils.data.DataLoader`` (the baseline).
* ``store raw``: a store prepared by ``alexnet prepare`` (uint8 256x256), read by the
  package's ``BatchLoader``/``StoreBatches``. Target: at least 10x the baseline.
* ``store jpeg``: the same images stored as 256x256 JPEGs (about a sixth of the bytes).
* ``folder``: straight from the JPEG files (``--layout files``: an index of the originals,
  decoded and resized at each use). Target: at least 1.5x the baseline.

Then memory: a raw store several times larger than the data memory the streaming process is
allowed (``RLIMIT_DATA``, which bounds anonymous and private memory but not the page cache)
is streamed for several passes with two loader workers, with malloc as it is and with freed
memory kept as a CPU training process keeps it, and the peak anonymous resident memory
of the process and its workers (their ``Pss_Anon``, /proc/PID/smaps_rollup) is reported per
pass: flat, not growing with the bytes read.

    python bench/loader.py [--batch 128] [--rounds 5] [--stream-gb 6] [--limit-gb 1.5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import describe, in_processes, machine, parse_held, write

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
TARGETS = {"store raw / torchvision": 10.0, "folder / torchvision": 1.5}
_WORK = Path(os.environ.get("ALEXNET_BENCH_DIR", tempfile.gettempdir())) / "alexnet-bench-loader"


def _store(layout: str) -> Path:
    return _WORK / f"store-{layout}"


def prepare_stores(workers: int) -> dict:
    """The three stores of the sample, each prepared afresh and timed."""
    from alexnet.data.prepare import Plan, prepare

    made = {}
    for layout in ("raw", "jpeg", "files"):
        out = _store(layout)
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        prepare(SAMPLE, out, splits=["train"], plan=Plan(layout), workers=workers, chunk=125,
                progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        made[layout] = {"seconds": seconds, "ms_per_image_per_core": 1e3 * seconds * workers
                        / 1000, "megabytes": size / 1e6}  # fmt: skip
        print(f"  prepared {layout}: {seconds:.1f} s with {workers} workers, {size / 1e6:.0f} MB")
    return made


# --------------------------------------------------------------------------------------------
# The cases (each built in its own process)


def _folder_tree() -> Path:
    """The flat sample as ImageFolder wants it: <wnid>/<file>, as links."""
    tree = _WORK / "imagefolder"
    if not tree.is_dir():
        part = tree.with_name("imagefolder.part")
        shutil.rmtree(part, ignore_errors=True)
        for f in sorted(SAMPLE.glob("*.JPEG")):
            (part / f.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
            (part / f.name.split("_")[0] / f.name).symlink_to(f)
        part.rename(tree)
    return tree


def torchvision_case(batch: int, stats, std):
    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    mean = stats.mean_image.permute(2, 0, 1) / 255

    def lighting(x):
        alpha = torch.randn(3) * 0.1
        return x + (stats.eigvec @ (alpha * stats.eigval))[:, None, None]

    transform = T.Compose([T.Resize(256), T.CenterCrop(256), T.ToTensor(), lambda x: x - mean,
                           T.RandomCrop(227), T.RandomHorizontalFlip(), lighting,
                           T.Normalize([0.0, 0.0, 0.0], std)])  # fmt: skip
    loader = DataLoader(ImageFolder(str(_folder_tree()), transform), batch, shuffle=True)
    return _cycle(loader)


def package_case(layout: str, batch: int, stats, std):
    import torch

    from alexnet.data.batches import PCA, StoreBatches
    from alexnet.data.loader import BatchLoader
    from alexnet.data.store import open_store

    split = open_store(_store(layout)).split("train")
    maker = StoreBatches(split, 227, stats.mean_image / 255, torch.tensor(std), True,
                         PCA(stats.eigval, stats.eigvec, 0.1))  # fmt: skip
    loader = BatchLoader(split, batch, maker, train=True, channels_last=True)
    return _cycle(loader)


def _cycle(loader):
    """One batch per call, epoch after epoch."""
    state = {"it": iter(loader), "epoch": 0}

    def run() -> None:
        try:
            next(state["it"])
        except StopIteration:
            state["epoch"] += 1
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(state["epoch"])
            state["it"] = iter(loader)
            next(state["it"])

    return run


def build_case(name: str, batch: int):
    from alexnet.data.store import open_store
    from alexnet.runtime import keep_freed_memory

    keep_freed_memory()  # as a training process runs (train.allocator "auto"), for every case
    stats = open_store(_store("raw")).stats()
    std = [0.229, 0.224, 0.225]
    if name == "torchvision":
        return torchvision_case(batch, stats, std), "ImageFolder + PIL transforms"
    layout = {"store raw": "raw", "store jpeg": "jpeg", "folder": "files"}[name]
    return package_case(layout, batch, stats, std), f"alexnet StoreBatches, layout {layout}"


# --------------------------------------------------------------------------------------------
# Memory while streaming a store larger than the memory allowed


def synthetic_store(gigabytes: float) -> Path:
    """A raw store of distinct random 256x256 images, about ``gigabytes`` in size, written
    in the store format by the package's own finishing step (its statistics come from the
    first image of each chunk: they do not matter here)."""
    import json

    import numpy as np
    import torch

    from alexnet.data.prepare import Plan, begin_store, finish_split
    from alexnet.data.stats import PixelSums
    from alexnet.data.store import chunk_name

    out = _WORK / f"stream-{gigabytes:g}gb"
    if (out / "store.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    per_chunk, side = 1000, 256
    chunks = max(1, round(gigabytes * 1e9 / (per_chunk * side * side * 3)))
    meta = begin_store(out, Plan(), ["a", "b"], ["a", "b"], out)
    (out / "train").mkdir()
    rng = np.random.default_rng(0)
    for c in range(chunks):
        images = rng.integers(0, 256, (per_chunk, side, side, 3), dtype=np.uint8)
        (out / "train" / f"{chunk_name(c)}.data").write_bytes(images.tobytes())
        sums = PixelSums()
        sums.add(torch.from_numpy(images[:1]))
        torch.save(sums.to_dict(), out / "train" / f"{chunk_name(c)}.sums")
        kept = [[f"synthetic/{c}/{i}", i % 2, i * images[0].nbytes, images[0].nbytes]
                for i in range(per_chunk)]  # fmt: skip
        record = {"files": per_chunk, "kept": kept, "skipped": [], "bytes": images.nbytes,
                  "sha256": ""}  # fmt: skip
        (out / "train" / f"{chunk_name(c)}.json").write_text(json.dumps(record))
    finish_split(out, "train", chunks, [], meta)
    return out


def _anon_kib(pid: int) -> int:
    """The process's proportional share of anonymous memory (Pss_Anon): forked workers share
    their parent's pages until they write them, and RssAnon would count those in each."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss_Anon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_anon_kib() -> int:
    """Anonymous memory of this process and its children (the loader workers)."""
    me = os.getpid()
    total = _anon_kib(me)
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # a thread that has just ended
            continue
        total += sum(_anon_kib(int(c)) for c in children)
    return total


def stream(store: str, passes: int, batch: int, workers: int, allocator: str) -> None:
    """(Run in a child process.) Every batch of ``passes`` epochs, printing the peak
    anonymous memory of each pass."""
    import torch

    from alexnet.data.batches import StoreBatches
    from alexnet.data.loader import BatchLoader
    from alexnet.data.store import open_store
    from alexnet.runtime import keep_freed_memory

    keep_freed_memory(allocator)
    torch.set_num_threads(1)
    split = open_store(store).split("train")
    maker = StoreBatches(split, 227, torch.zeros(3), torch.ones(3))
    loader = BatchLoader(split, batch, maker, train=True, channels_last=True, workers=workers)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_anon_kib())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    for p in range(passes):
        loader.set_epoch(p)
        peak[0], start, images = 0, time.perf_counter(), 0
        for x, _, _ in loader:
            images += len(x)
        print(f"pass {p + 1}: {images} images, {time.perf_counter() - start:.1f} s, peak "
              f"anonymous memory {peak[0] / 1024:.0f} MiB", flush=True)  # fmt: skip
    done.set()


def _stream_run(store: Path, passes: int, batch: int, allocator: str, limit: int | None) -> dict:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import loader; "
            f"loader.stream({str(store)!r}, {passes}, {batch}, 2, {allocator!r})")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], preexec_fn=cap if limit else None,
                            capture_output=True, text=True)  # fmt: skip
    print(f"  allocator {allocator}:\n" + result.stdout + result.stderr[-2000:])
    peaks = [float(line.split("memory ")[1].split()[0]) for line in result.stdout.splitlines()
             if "anonymous memory" in line]  # fmt: skip
    complete = result.returncode == 0 and len(peaks) == passes
    return {"peak_anon_mib_per_pass": peaks, "completed": complete,
            "flat": complete and max(peaks) <= 1.1 * peaks[0] + 16}  # fmt: skip


def measure_memory(gigabytes: float, limit_gb: float, passes: int, batch: int) -> dict:
    """The loader streaming under the data limit, with malloc as it is and as a CPU training
    process runs it (train.allocator "auto": freed memory kept, runtime.keep_freed_memory)."""
    store = synthetic_store(gigabytes)
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    limit = int(limit_gb * 2**30)
    system = _stream_run(store, passes, batch, "system", limit)
    kept = _stream_run(store, passes, batch, "auto", limit)
    return {"store_gb": size / 1e9, "data_limit_gb": limit_gb, "passes": passes,
            "loader_workers": 2, "system": system, "freed_memory_kept": kept}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2, help="batches per case per round")
    parser.add_argument("--stream-gb", type=float, default=6.0)
    parser.add_argument("--limit-gb", type=float, default=1.5)
    parser.add_argument("--passes", type=int, default=3)
    args = parse_held(parser)
    if not SAMPLE.is_dir():
        sys.exit(f"bench/loader.py needs {SAMPLE} (the 1,000 ILSVRC sample images)")
    m = machine()
    print(describe(m))
    prepared = prepare_stores(len(os.sched_getaffinity(0)))
    names = ["torchvision", "store raw", "store jpeg", "folder"]
    cases = in_processes("loader", names, {"batch": args.batch}, args.rounds, args.calls, 1)
    for c in cases.values():
        c["images_per_s_per_core"] = args.batch / c["seconds"]
    base = cases["torchvision"]["images_per_s_per_core"]
    ratios = {f"{n} / torchvision": cases[n]["images_per_s_per_core"] / base for n in names[1:]}
    for n, c in cases.items():
        print(f"{n:12s} {c['images_per_s_per_core']:8.0f} images/s per core  ({c['setting']})")
    for k, v in ratios.items():
        goal = f"  (target >= {TARGETS[k]}x: {'met' if v >= TARGETS[k] else 'NOT met'})" \
            if k in TARGETS else ""  # fmt: skip
        print(f"{k}: {v:.1f}x{goal}")
    memory = measure_memory(args.stream_gb, args.limit_gb, args.passes, args.batch)
    system, kept = memory["system"], memory["freed_memory_kept"]
    print(f"streaming {memory['store_gb']:.1f} GB under a {args.limit_gb:g} GiB data limit: peak "
          f"anonymous memory per pass {system['peak_anon_mib_per_pass']} MiB, "
          f"{'flat' if system['flat'] else 'NOT flat'}; with freed memory kept: "
          f"{kept['peak_anon_mib_per_pass']} MiB, {'flat' if kept['flat'] else 'NOT flat'}")  # fmt: skip
    write("loader", {"batch": args.batch, "rounds": args.rounds, "cases": cases,
                     "ratios": ratios, "targets": TARGETS, "prepared": prepared,
                     "memory": memory})  # fmt: skip


if __name__ == "__main__":
    main()

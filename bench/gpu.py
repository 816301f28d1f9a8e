"""Training images/s of the paper's network on one CUDA GPU: bfloat16, channels_last, the
fused SGD and the Triton LRN, eager and under ``torch.compile``, at several batch sizes, on
synthetic data; and the fraction of the GPU's dense bfloat16 peak that it reaches.

With ``--store STORE`` (a store made by ``alexnet prepare``), the same network is then trained
by the package's own loop (``alexnet.training.train.fit``, the imagenet-paper recipe) fed by its own
loader: uint8 crops read by worker processes, pinned, copied, and the mean image, flip and PCA
noise applied on the GPU, on the loader's own stream beside the step and, for comparison in the
same run, on the compute stream between steps (``BatchLoader.finish_aside``). The loader's own
rate (batches made and delivered, no network) is printed beside it, so it is plain whether the
loader keeps up.

With ``--profile DIR``, a few steps of each (the network alone, and fed from the store) are
traced by ``torch.profiler``: DIR gets each trace (Chrome's format, gzipped) and a table of the
operators by GPU time and by host time.

    python bench/gpu.py [--batches 128 256 512] [--seconds 8] [--compile-batches 256 512]
                        [--store STORE --store-batches 256 512 --workers N] [--profile DIR]

Needs only torch (and triton for the LRN kernels) beside the package's source.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from alexnet.config import apply_overrides, load_recipe
from alexnet.data.loader import BatchLoader
from alexnet.models import build_model
from alexnet.models.summary import summarise
from alexnet.ops.lrn import choose_ahead
from alexnet.runtime import tune_cudnn

# Dense bfloat16 tensor-core peaks, FLOP/s, from the vendors' data sheets (SXM parts).
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def measure(batch: int, seconds: float, compiled: bool, after_step=None, steps: int = 0) -> float:
    """Images/s of ``seconds`` of training steps on synthetic data (or exactly ``steps``, each
    followed by ``after_step()``: for a profile)."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("alexnet").to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4,
                          fused=True)  # fmt: skip
    if compiled:  # the LRN kernel chosen before tracing: one graph (as train.wrap does)
        choose_ahead(device, (torch.float32, torch.bfloat16))
    net = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, 227, 227, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if steps:
        for _ in range(steps):
            step()
            after_step()
        torch.cuda.synchronize()
        return 0.0
    for _ in range(3):  # compilation, cuDNN's algorithm search, the allocator's first blocks
        step()
    torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
        if steps % 10 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def lrn_times(batch: int = 512) -> dict:
    """Milliseconds of one LRN forward and backward at conv1's and conv2's output (bfloat16,
    channels_last), the Triton kernels against ``torch.nn.LocalResponseNorm`` (an average
    pooling of the squares: several kernels and intermediates per call)."""
    from triton.testing import do_bench

    from alexnet.ops.lrn import LocalResponseNorm

    times = {}
    for name, shape in (("conv1", (batch, 96, 55, 55)), ("conv2", (batch, 256, 27, 27))):
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        g = torch.randn_like(x)
        for label, layer in (("triton", LocalResponseNorm(5, 1e-4, 0.75, 2.0, "paper", "triton")),
                             ("torch", torch.nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0))):  # fmt: skip

            def step(layer=layer, x=x, g=g) -> None:
                x.grad = None
                layer(x).backward(g)

            times[f"{name} {label}"] = do_bench(step, return_mode="median")
        print(f"LRN {name} {tuple(shape)} bf16 fwd+bwd: Triton {times[f'{name} triton']:.2f} ms, "
              f"torch.nn.LocalResponseNorm {times[f'{name} torch']:.2f} ms", flush=True)  # fmt: skip
    return times


def store_from_sample(sample: Path, copies: int, out: Path) -> Path:
    """A raw store of ``copies`` links to each of the sample's ``<wnid>_*.JPEG`` files in
    train/ (one class per wnid) and one in val/: enough images for whole epochs of several
    hundred steps from a sample small enough to travel with the source."""
    from alexnet.data.prepare import Plan, prepare

    tree, store = out / "images", out / "store"
    for f in sorted(sample.glob("*.JPEG")):
        wnid = f.name.split("_")[0]
        for split, n in (("train", copies), ("val", 1)):
            (tree / split / wnid).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                link = tree / split / wnid / f"{k:03d}_{f.name}"
                if not link.exists():
                    link.symlink_to(f.resolve())
    start = time.perf_counter()
    prepare(tree, store, plan=Plan("raw"), workers=len(os.sched_getaffinity(0)), progress=False)
    print(f"prepared a raw store of {copies} x {len(list(sample.glob('*.JPEG')))} images in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return store


def store_recipe(store: Path, batch: int, epochs: int, workers: int, compiled: bool):
    sets = [f"data.root={store.resolve()}", f"data.batch_size={batch}", f"epochs={epochs}",
            f"data.workers={workers}", f"train.compile={str(compiled).lower()}",
            "train.log_every=1000000"]  # fmt: skip
    return apply_overrides(load_recipe("imagenet-paper"), sets)


def loader_rate(store: Path, batch: int, workers: int, ring: bool = True, passes: int = 2) -> float:
    """Images/s that the training loader delivers on the GPU with no network to feed; with
    ``ring=False``, as it was before its ring of shared buffers (loader._Slots): a new
    shared-memory batch per step, pinned by DataLoader's thread."""
    from alexnet.runtime import start_runtime
    from alexnet.training.train import load_data_once, make_loaders, preprocessing, resolve

    recipe = resolve(store_recipe(store, batch, 1, workers, False))
    rt = start_runtime(recipe.train)
    train_set, test_set = load_data_once(recipe, rt)
    stats = preprocessing(recipe, train_set, None)
    if ring:
        loader, _ = make_loaders(recipe, rt, train_set, test_set, stats)
    else:
        with mock.patch.object(BatchLoader, "_ring", lambda _self: None):
            loader, _ = make_loaders(recipe, rt, train_set, test_set, stats)
    loader.set_epoch(0)
    for _ in loader.batches():  # the workers' start and the first pass through the page cache
        pass
    sync()
    start, seen = time.perf_counter(), 0
    for epoch in range(1, passes + 1):
        loader.set_epoch(epoch)
        for x, _y, _valid in loader.batches():
            seen += x.shape[0]
    sync()
    return seen / (time.perf_counter() - start)


def store_training(store: Path, batch: int, workers: int, compiled: bool, epochs: int,
                   finish_aside: bool = True) -> dict:  # fmt: skip
    """The package's training loop on the store; the first epoch (compilation, cuDNN's search,
    the workers' start) is reported apart from the rest."""
    import tempfile

    from alexnet.training.train import fit

    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(BatchLoader, "finish_aside", finish_aside):  # fmt: skip
        run = Path(tmp) / "run"
        fit(store_recipe(store, batch, epochs, workers, compiled), run, progress=False,
            report=False)  # fmt: skip
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    later = history[1:] or history
    seen = sum(h["images_per_s"] * h["epoch_seconds"] for h in later)
    return {"first_epoch_images_per_s": history[0]["images_per_s"],
            "images_per_s": seen / sum(h["epoch_seconds"] for h in later),
            "epochs": [h["images_per_s"] for h in history]}  # fmt: skip


def store_cases(args, train_flops: float, peak: float | None) -> list[dict]:
    """Each batch size trained from the store twice, its batches finished beside the step
    (the default) and between steps, side by side."""
    rows = []
    for batch in args.store_batches:
        for aside in (True, False):
            rows.append(store_case(args, batch, aside, train_flops, peak))
        rates = [r.get("images_per_s") for r in rows[-2:]]
        if all(rates):
            print(f"store batch {batch:4d}: finished beside the step / between steps = "
                  f"{rates[0] / rates[1]:.3f}", flush=True)  # fmt: skip
    return rows


def store_case(args, batch: int, aside: bool, train_flops: float, peak: float | None) -> dict:
    where = "beside the step" if aside else "between steps"
    try:
        trained = store_training(args.store, batch, args.workers, args.store_compile,
                                 args.store_epochs, aside)  # fmt: skip
    except Exception as exc:  # as above: report it and go on
        print(f"store batch {batch} ({where}): failed: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:200]}")  # fmt: skip
        return {"batch": batch, "store": True, "finish_aside": aside, "error": str(exc)[:500]}
    frac = trained["images_per_s"] * train_flops / peak if peak else None
    how = "compiled" if args.store_compile else "eager"
    print(f"store batch {batch:4d} {how:8s} {trained['images_per_s']:9.0f} img/s trained, "
          f"batches finished {where}"
          + (f", {100 * frac:.1f}% of bf16 peak" if frac else "")
          + f" (first epoch {trained['first_epoch_images_per_s']:.0f}; workers "
          f"{args.workers if args.workers >= 0 else 'auto'})", flush=True)  # fmt: skip
    return {"batch": batch, "store": True, "compiled": args.store_compile, "workers": args.workers,
            "finish_aside": aside, **trained, "fraction_of_bf16_peak": frac}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--compile-batches", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--store", type=Path, help="a store (alexnet prepare) to train from")
    parser.add_argument("--sample", type=Path, help="<wnid>_*.JPEG files to make a store of")
    parser.add_argument("--copies", type=int, default=32, help="of each sample image in train/")
    parser.add_argument("--store-batches", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--store-epochs", type=int, default=3)
    parser.add_argument("--store-compile", action="store_true", help="train.compile=true")
    parser.add_argument("--workers", type=int, default=-1, help="loader processes (-1: auto)")
    parser.add_argument("--loader-workers", type=int, nargs="*", default=[8, 15],
                        help="worker counts to time the loader alone with")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    parser.add_argument("--profile", type=Path, help="a folder for profiles of a few steps")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA GPU here")
    tune_cudnn()  # cuDNN's fastest algorithms for fixed shapes, as alexnet train chooses them
    name = torch.cuda.get_device_name()
    train_flops = 3 * 2 * summarise("alexnet")["total_mult_adds"]  # per image: fwd + 2 bwd
    peak = peak_flops(name)
    print(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{train_flops / 1e9:.2f} GFLOP per training image")  # fmt: skip
    result = {"gpu": name, "torch": torch.__version__, "cuda": torch.version.cuda,
              "train_flops_per_image": train_flops, "rows": []}  # fmt: skip

    def save() -> None:  # after every case: a run stopped by its time limit keeps what it had
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    try:
        result["lrn_ms"] = lrn_times()
    except Exception as exc:  # the LRN figures are a side note: never stop the run for them
        print(f"LRN timing failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    cases = [(b, False) for b in args.batches] + [(b, True) for b in args.compile_batches]
    for batch, compiled in cases:
        result["rows"].append(synthetic_case(batch, args.seconds, compiled, train_flops, peak))
        save()
    if args.profile:
        profile_network(max(args.batches), args.profile)
    if args.sample and not args.store:
        work = Path(tempfile.gettempdir()) / "alexnet-gpu"
        args.store = store_from_sample(args.sample, args.copies, work)
    if args.store:
        loader_cases(args, result, save)
        result["rows"] += store_cases(args, train_flops, peak)
        save()
        if args.profile:
            profile_store(args.store, max(args.store_batches, default=512), args.workers,
                          args.profile)  # fmt: skip
    print_best(result["rows"])


# What one GPU should reach: the network alone, and fed from a store (within 10% of alone).
TARGETS = {False: 40_000, True: 30_000}


def loader_cases(args, result: dict, save) -> None:
    """The loader alone at each worker count, with its ring of shared buffers and without."""
    batch = max(args.store_batches, default=512)
    cases = [(w, True) for w in args.loader_workers] + [(args.loader_workers[0], False)]
    for workers, ring in cases:
        label = (
            f"{workers} workers, {'ring of shared buffers' if ring else 'a new segment per batch'}"
        )
        try:
            rate = loader_rate(args.store, batch, workers, ring)
        except Exception as exc:  # as above
            print(f"loader alone, {label}: failed: {type(exc).__name__}: {exc}")
            continue
        result.setdefault("loader_images_per_s", {})[label] = rate
        print(f"loader alone, {label}: {rate:.0f} img/s", flush=True)
        save()


def print_best(rows: list[dict]) -> None:
    """The best rate on synthetic data and from the store, against the targets."""
    for fed in (False, True):
        rates = [r["images_per_s"] for r in rows if "images_per_s" in r
                 and r.get("store", False) == fed]  # fmt: skip
        if rates:
            print(f"best {'from the store' if fed else 'on synthetic data'}: {max(rates):.0f} "
                  f"img/s (target {TARGETS[fed]:,}; 90 epochs of ImageNet's 1.28M images in "
                  f"{90 * 1.281e6 / max(rates) / 3600:.1f} h at that rate)")  # fmt: skip


def trace(out: Path, name: str, run_steps) -> None:
    """``run_steps(step)`` traced: it calls ``step()`` after each training step; the first
    steps warm up, the next 6 are recorded. Writes NAME.json.gz and NAME.txt (the operators
    by GPU time, then by host time) into ``out``."""
    from torch.profiler import ProfilerActivity, profile, schedule

    out.mkdir(parents=True, exist_ok=True)
    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=acts, schedule=schedule(wait=3, warmup=2, active=6, repeat=1)) as prof:
        run_steps(prof.step)
    prof.export_chrome_trace(str(out / f"{name}.json.gz"))
    table = prof.key_averages()
    text = "\n\n".join(table.table(sort_by=key, row_limit=30)
                        for key in ("self_cuda_time_total", "self_cpu_time_total"))  # fmt: skip
    (out / f"{name}.txt").write_text(text + "\n")
    print(f"profile of {name}: {out / name}.txt", flush=True)


def profile_network(batch: int, out: Path) -> None:
    """The network alone, eager: 11 steps, the last 6 traced."""
    try:
        trace(out, f"network-b{batch}", lambda step: measure(batch, 0.0, False, step, 11))
    except Exception as exc:  # a side note: never stop the run for it
        print(f"profile of the network failed: {type(exc).__name__}: {exc}")


def profile_store(store: Path, batch: int, workers: int, out: Path) -> None:
    """The package's training loop fed from the store: its first steps after the start."""
    from alexnet.training import train

    def run_steps(step) -> None:
        update = train.update

        def update_and_step(*args, **kwargs):
            update(*args, **kwargs)
            step()

        with mock.patch.object(train, "update", update_and_step):
            store_training(store, batch, workers, False, 1)

    try:
        trace(out, f"store-b{batch}", run_steps)
    except Exception as exc:  # as above
        print(f"profile of the store's training failed: {type(exc).__name__}: {exc}")


def synthetic_case(batch: int, seconds: float, compiled: bool, train_flops: float,
                   peak: float | None) -> dict:  # fmt: skip
    how = "compiled" if compiled else "eager"
    try:
        rate = measure(batch, seconds, compiled)
    except Exception as exc:  # report and go on: one failed case must not hide the rest
        print(f"batch {batch:4d} {how:8s} failed: "
              f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")  # fmt: skip
        return {"batch": batch, "compiled": compiled, "error": str(exc)[:500]}
    frac = rate * train_flops / peak if peak else None
    print(f"batch {batch:4d} {how:8s} {rate:9.0f} img/s"
          + (f"  {100 * frac:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16" if frac else ""),
          flush=True)  # fmt: skip
    return {"batch": batch, "compiled": compiled, "images_per_s": rate,
            "fraction_of_bf16_peak": frac}  # fmt: skip


if __name__ == "__main__":
    main()

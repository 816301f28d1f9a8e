"""The paper's recipe on real photographs at 227 pixels, run as a user runs it:

    alexnet prepare caltech101-128.tar.gz STORE
    alexnet train --recipe imagenet-paper --data STORE --set epochs=E
    alexnet eval RUN --crops 1        and        --crops 10
    alexnet lrn-divisor RUN IMAGES...

Caltech-101 (101 classes, 5,784 training and 2,893 validation photographs) stands in for
ImageNet: its images are 128 pixels on the short side and ``prepare`` upscales them to 256,
so the network sees blurred photographs (every figure here says so). Everything else is the
paper's: N(0, 0.01) weights with unit biases, rate 0.01 with the paper's update rule, the
plateau schedule, dropout, LRN, two towers, 227 crops with flips and PCA colour noise, the
mean image subtracted from values 0-255. ``--scale unit`` (or ``both``, the default) runs it
again with the inputs divided by ImageNet's deviation too (``--set 'data.std=[]'``), to
measure what the input scale does on a real run. The arithmetic is the recipe's
``train.precision`` (auto: bfloat16 where the CPU is fast at it, a departure from the paper's
float32 that the results name).

    python bench/paper_recipe.py [--epochs 25] [--scale both|paper|unit] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from machine import describe, machine, parse_held, write

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101-128.tar.gz"
ALEXNET = [sys.executable, "-m", "alexnet"]
SCALES = {"paper": [], "unit": ["--set", "data.std=[]"]}
DIVISOR_IMAGES = 32  # validation photographs whose LRN divisors are measured at the end


def alexnet(*args: str, env: dict, capture: bool = False) -> str:
    done = subprocess.run([*ALEXNET, *args], env=env, check=True, text=True,
                          capture_output=capture)  # fmt: skip
    return done.stdout if capture else ""


def some_photographs(archive: Path, folder: Path) -> list[Path]:
    """``DIVISOR_IMAGES`` validation images of the archive, spread over its classes."""
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith("val/")),
                         key=lambda m: m.name)  # fmt: skip
        chosen = members[:: max(1, len(members) // DIVISOR_IMAGES)][:DIVISOR_IMAGES]
        tar.extractall(folder, members=chosen, filter="data")
    return [folder / m.name for m in chosen]


def divisor_spread(report: dict) -> dict[str, list[float]]:
    """Each LRN layer's divisor at the 5th, 50th and 95th percentile under the alpha it uses
    (``alexnet lrn-divisor``'s nine percentiles are 0, 1, 5, 25, 50, 75, 95, 99, 100)."""
    return {layer["layer"]: [layer["percentiles"][layer["used"]][i] for i in (2, 4, 6)]
            for layer in report["layers"]}  # fmt: skip


def one_scale(scale: str, store: Path, runs: Path, epochs: int, extra: list[str],
              images: list[Path], env: dict) -> dict:  # fmt: skip
    """Train, evaluate and measure the network at one input scale."""
    start = time.perf_counter()
    alexnet("train", "--recipe", "imagenet-paper", "--data", str(store), "--runs", str(runs),
            "--name", scale, "--no-progress", "--no-report", "--set", f"epochs={epochs}",
            *SCALES[scale], *extra, env=env)  # fmt: skip
    train_wall = time.perf_counter() - start
    run = runs / scale
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    header = (run / "log.txt").read_text().splitlines()[0]  # "run ...: NET on ..., cpu, bf16, ..."
    crops = {}
    for n in (1, 10):
        got = json.loads(alexnet("eval", str(run / "last.pt"), "--crops", str(n), "--json",
                                 "--no-progress", env=env, capture=True))  # fmt: skip
        crops[n] = {"top1_err": got["top1_err"], "top5_err": got["top5_err"]}
    divisor = json.loads(alexnet("lrn-divisor", str(run / "last.pt"), *map(str, images),
                                 "--json", env=env, capture=True))  # fmt: skip
    rates = [h["lr"] for h in history]
    divisions = [h["epoch"] for h, before in zip(history[1:], rates, strict=False)
                 if h["lr"] < before * 0.5]  # fmt: skip
    return {"scale": scale, "epochs": len(history), "train_wall_seconds": train_wall,
            "train_seconds": history[-1]["train_seconds"], "run": header,
            "precision": "bf16" if ", bf16," in header else "fp32",
            "crops_1": crops[1], "crops_10": crops[10], "lr_divided_after_epochs": divisions,
            "lrn_divisor_p5_p50_p95": divisor_spread(divisor),
            "history": [{k: h[k] for k in ("epoch", "train_loss", "train_top1_err", "val_loss",
                                           "val_top1_err", "val_top5_err", "lr",
                                           "images_per_s")} for h in history]}  # fmt: skip


def line(r: dict) -> str:
    first, last = r["history"][0], r["history"][-1]
    return (f"{r['scale']:5s} scale, {r['epochs']} epochs ({r['precision']}, "
            f"{r['train_wall_seconds'] / 60:.1f} min): top-1 error {100 * r['crops_1']['top1_err']:.1f}% "
            f"(10 crops {100 * r['crops_10']['top1_err']:.1f}%), top-5 {100 * r['crops_1']['top5_err']:.1f}% "
            f"(10 crops {100 * r['crops_10']['top5_err']:.1f}%); training loss "
            f"{first['train_loss']:.2f} -> {last['train_loss']:.2f}; rate divided after epochs "
            f"{r['lr_divided_after_epochs'] or 'none'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--scale", choices=("both", *SCALES), default="both")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parse_held(parser)
    if not Path(args.data).exists():
        sys.exit(f"bench/paper_recipe.py needs {args.data} (Caltech-101 at 128 pixels)")
    print(describe(machine()))
    scales = list(SCALES) if args.scale == "both" else [args.scale]
    extra = [x for item in args.overrides for x in ("--set", item)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ALEXNET_CACHE": str(Path(tmp) / "cache")}
        store = Path(tmp) / "store"
        start = time.perf_counter()
        alexnet("prepare", args.data, str(store), "--no-progress", env=env)
        prepare_wall = time.perf_counter() - start
        images = some_photographs(Path(args.data), Path(tmp) / "photos")
        print(f"Caltech-101 upscaled from 128 to 256 pixels by prepare ({prepare_wall:.0f} s); "
              "top-1/top-5 errors on its 2,893 validation images, 101 classes")  # fmt: skip
        for scale in scales:  # each scale's result written as soon as it is done: hours apart
            results.append(one_scale(scale, store, Path(tmp) / "runs", args.epochs, extra,
                                     images, env))  # fmt: skip
            print(line(results[-1]), flush=True)
            write("paper_recipe", {"command": "alexnet train --recipe imagenet-paper",
                                   "data": "caltech101-128.tar.gz, upscaled to 256 by prepare",
                                   "epochs": args.epochs, "overrides": args.overrides,
                                   "prepare_wall_seconds": prepare_wall, "results": results})  # fmt: skip


if __name__ == "__main__":
    main()

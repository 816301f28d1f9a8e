"""Shared by the accuracy benchmarks: train a shipped recipe, report accuracy against time.

Training time is the sum of the optimisation steps' time (each epoch's ``epoch_seconds``, as
the run reports it); wall time also counts loading the data, the per-epoch evaluations and the
report. The result is written to ``results/<recipe>-<cpu kind>.json`` (see machine.py).

Beside accuracy it reports how close training came to the hardware: multiply-adds per second
achieved (three times the forward pass's per image, for forward, input gradients and weight
gradients) against a large matrix product's in the same precision, the machine's practical
peak.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from machine import describe, machine, parse_held, write

from alexnet.config import RECIPE_FORMAT, apply_overrides, load_recipe
from alexnet.models.summary import summarise
from alexnet.runtime import pick_precision
from alexnet.training.train import fit, resolve


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second of an n x n matrix product in ``dtype``, the best of a few."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return n**3 / best


def hardware_use(recipe, images_per_s: float) -> dict:
    recipe = resolve(recipe)
    d = recipe.data
    forward = summarise(recipe.model.arch, (d.channels, d.image_size, d.image_size),
                        **recipe.model.options)["total_mult_adds"]  # fmt: skip
    amp = pick_precision(recipe.train.precision, torch.device("cpu"))
    peak = matmul_peak(amp or torch.float32)
    achieved = 3 * forward * images_per_s
    return {"forward_mult_adds_per_image": forward, "achieved_mult_adds_per_s": achieved,
            "matmul_peak_mult_adds_per_s": peak, "fraction_of_peak": achieved / peak,
            "precision": "bf16" if amp else "fp32"}  # fmt: skip


def run(recipe_name: str, data: str | None, overrides: list[str], target_acc: float,
        target_s: float) -> dict:  # fmt: skip
    recipe = load_recipe(recipe_name)
    if data:
        recipe.data.root = data  # made absolute with the rest of the recipe (train.resolve)
    recipe = apply_overrides(recipe, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        final = fit(recipe, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - start
    accuracy = 1 - final["val_top1_err"]
    # over the whole training (every epoch sees the same number of images), not the last epoch's
    images_per_s = (
        final["images_per_s"] * final["epoch_seconds"] * final["epoch"] / final["train_seconds"]
    )
    result = {
        "recipe": recipe_name, "overrides": overrides, "test_accuracy": round(accuracy, 4),
        "top5_error": round(final["val_top5_err"], 4), "train_seconds": round(final["train_seconds"], 1),
        "wall_seconds": round(wall, 1), "epochs": final["epoch"], "images_per_s": round(images_per_s),
        "target_accuracy": target_acc, "target_train_seconds": target_s,
        "met": accuracy >= target_acc and final["train_seconds"] <= target_s,
        "recipe_format": RECIPE_FORMAT,  # 3 on: the paper's dropout placement and update rule
    }  # fmt: skip
    result["hardware"] = use = hardware_use(recipe, images_per_s)
    print(
        f"{recipe_name}: test accuracy {100 * accuracy:.2f}% (target {100 * target_acc:.1f}%), "
        f"training {final['train_seconds']:.0f} s (target {target_s:.0f} s), wall {wall:.0f} s, "
        f"{images_per_s:.0f} images/s on {describe(machine())} -> target "
        f"{'met' if result['met'] else 'NOT met'}"
    )
    print(f"  {use['achieved_mult_adds_per_s'] / 1e9:.1f} G multiply-adds/s in {use['precision']}, "
          f"{100 * use['fraction_of_peak']:.0f}% of a large matrix product's "
          f"{use['matmul_peak_mult_adds_per_s'] / 1e9:.1f} G/s")  # fmt: skip
    write(recipe_name.replace("-", "_"), result)
    return result


def main(doc: str, recipe: str, target_acc: float, target_s: float) -> None:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", help="data folder or archive (default: the recipe's search order)"
    )
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parse_held(parser)
    run(recipe, args.data, args.overrides, target_acc, target_s)

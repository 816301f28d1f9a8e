"""Shared by the accuracy benchmarks: train a shipped recipe, report accuracy against time.

Training time is the sum of the optimisation steps' time (each epoch's ``epoch_seconds``, as
the run reports it); wall time also counts loading the data, the per-epoch evaluations and the
report. The result is written as JSON beside this file (``results/<recipe>.json``) unless
``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from alexnet.config import apply_overrides, load_recipe
from alexnet.train import fit

RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def run(recipe_name: str, data: str | None, overrides: list[str], target_acc: float,
        target_s: float, out: Path) -> dict:  # fmt: skip
    recipe = load_recipe(recipe_name)
    if data:
        recipe.data.root = data  # made absolute with the rest of the recipe (train.resolve)
    recipe = apply_overrides(recipe, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        final = fit(recipe, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - start
    accuracy = 1 - final["val_top1_err"]
    result = {
        "recipe": recipe_name, "overrides": overrides, "test_accuracy": round(accuracy, 4),
        "top5_error": round(final["val_top5_err"], 4), "train_seconds": round(final["train_seconds"], 1),
        "wall_seconds": round(wall, 1), "epochs": final["epoch"], "images_per_s": round(final["images_per_s"]),
        "target_accuracy": target_acc, "target_train_seconds": target_s,
        "met": accuracy >= target_acc and final["train_seconds"] <= target_s,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(),
    }  # fmt: skip
    print(
        f"{recipe_name}: test accuracy {100 * accuracy:.2f}% (target {100 * target_acc:.1f}%), "
        f"training {final['train_seconds']:.0f} s (target {target_s:.0f} s), wall {wall:.0f} s, "
        f"{final['images_per_s']:.0f} images/s on {result['cpu']} -> target "
        f"{'met' if result['met'] else 'NOT met'}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def main(doc: str, recipe: str, target_acc: float, target_s: float) -> None:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", help="data folder or archive (default: the recipe's search order)"
    )
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{recipe.replace('-', '_')}.json")
    args = parser.parse_args()
    run(recipe, args.data, args.overrides, target_acc, target_s, args.out)

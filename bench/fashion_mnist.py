"""The main job's benchmark: test accuracy of the fashion-mnist recipe and its training time.

Target: at least 94.0% test accuracy within 5 minutes of training on a 2-core CPU.
Training time counts the optimisation steps only (data loading, per-epoch evaluation and the
report are timed separately and printed beside it).

    python bench/fashion_mnist.py [--set KEY=VALUE ...] [--out bench/results/fashion_mnist.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from alexnet.train import fit, resolve_recipe

TARGET_ACCURACY = 0.94
TARGET_SECONDS = 300.0


def run(
    recipe_name: str,
    data: str | None,
    overrides: list[str],
    target_acc: float,
    target_s: float,
    out: Path,
) -> dict:
    recipe = resolve_recipe(recipe_name, data, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        final = fit(recipe, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - start
    accuracy = 1 - final["val_top1_err"]
    result = {
        "recipe": recipe_name,
        "overrides": overrides,
        "test_accuracy": round(accuracy, 4),
        "top5_error": round(final["val_top5_err"], 4),
        "train_seconds": round(final["train_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "epochs": final["epoch"],
        "images_per_s": round(final["images_per_s"]),
        "target_accuracy": target_acc,
        "target_train_seconds": target_s,
        "met": accuracy >= target_acc and final["train_seconds"] <= target_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    print(
        f"{recipe_name}: test accuracy {100 * accuracy:.2f}% (target {100 * target_acc:.1f}%), "
        f"training {final['train_seconds']:.0f} s (target {target_s:.0f} s), wall {wall:.0f} s, "
        f"{final['images_per_s']:.0f} images/s -> target {'met' if result['met'] else 'NOT met'}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def main(
    recipe: str = "fashion-mnist",
    target_acc: float = TARGET_ACCURACY,
    target_s: float = TARGET_SECONDS,
) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data folder (default: the recipe's search order)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument(
        "--out", type=Path, default=Path(f"bench/results/{recipe.replace('-', '_')}.json")
    )
    args = parser.parse_args()
    run(recipe, args.data, args.overrides, target_acc, target_s, args.out)


if __name__ == "__main__":
    main()

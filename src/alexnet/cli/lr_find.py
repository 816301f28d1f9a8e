"""``alexnet lr-find``: a learning-rate range test, its plot and a suggested rate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alexnet.cli.options import (
    UserError,
    given,
    whole,
)


def add_parser(sub) -> None:
    p = sub.add_parser("lr-find", help="a learning-rate range test: plot and suggested rate",
                       description="Train a few dozen steps while the learning rate grows "
                       "geometrically, plot the loss, and suggest a rate (the one where the "
                       "loss is lowest divided by optim.lr_find_divisor, 10 unless the recipe "
                       "says otherwise). optim.lr_find = true does this at the start of a run.")  # fmt: skip
    p.add_argument("--recipe", type=given, required=True, help="recipe name or .toml path")
    p.add_argument("--data", type=given, help="data folder or archive (sets data.root)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe key")  # fmt: skip
    p.add_argument(
        "--steps", type=whole(3, 1_000_000), default=100, help="steps of the test (default 100)"
    )
    p.add_argument("--plot", type=given, default="lr_find.png",
                   help="where to write the plot (default lr_find.png)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the plot's file if it exists (default: refuse)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.config import apply_overrides, load_recipe
    from alexnet.training.train import find_learning_rate

    recipe = load_recipe(args.recipe)
    if args.data is not None:
        recipe.data.root = args.data
    recipe = apply_overrides(recipe, args.overrides)
    plot = Path(args.plot)
    if plot.is_dir():
        raise UserError(f"--plot {plot}: a folder; give the name of a file to write in it")
    if (plot.exists() or plot.is_symlink()) and not plot.is_file():
        raise UserError(f"--plot {plot}: not a regular file (a device, pipe, socket or a link to "
                        "nothing); give the name of a file to write")  # fmt: skip
    if plot.exists() and not args.overwrite:  # a user's own lr_find.png was replaced
        raise UserError(f"--plot {plot}: exists; add --overwrite to replace it, or give "
                        "another name")  # fmt: skip
    if not plot.parent.is_dir() or plot.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg"):
        raise UserError(f"--plot {plot}: needs an existing folder and a .png, .pdf, .svg or "
                        ".jpg name")  # fmt: skip
    test = find_learning_rate(recipe, args.steps, plot)
    print(f"loss lowest at learning rate {test.minimum:.3g}; suggested {test.suggestion:.3g} "
          f"(--set optim.lr={test.suggestion:.3g}); plot: {plot}")  # fmt: skip
    if test.at_edge:
        print(f"warning: the lowest loss is at the {'first' if test.minimum == test.rates[0] else 'last'} "
              "rate tried, so no real minimum was found: the suggestion is unreliable; try more "
              "--steps, or look at the plot", file=sys.stderr)  # fmt: skip
    if test.repeated():
        print(f"warning: {test.repeated()}", file=sys.stderr)

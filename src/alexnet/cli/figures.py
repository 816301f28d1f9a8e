"""``alexnet figures``: the paper's figures of a trained network, as PNG files and in TensorBoard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alexnet.cli.options import (
    TRAINED,
    UserError,
    eval_data_option,
    existing_data,
    folder_name,
    given,
    whole,
)


def add_parser(sub) -> None:
    p = sub.add_parser("figures", help="the paper's figures of a trained network, as PNG files",
                       description="Figure 3 (conv1's kernels, tower by tower), Figure 4 (test "
                       "images with their top-5 predictions, and beside their nearest training "
                       "images by the last hidden layer's features), the training curves and "
                       "the test set's confusion matrix, as PNG files and in TensorBoard.")  # fmt: skip
    p.add_argument("run", type=given, metavar="RUN_OR_CHECKPOINT", help=TRAINED)
    eval_data_option(p)
    p.add_argument("--out", type=given, help="folder for the PNG files (default: figures/ in the checkpoint's "
                                 "folder)")  # fmt: skip
    p.add_argument(
        "--split", type=folder_name, help="which split to show (default: val, else test)"
    )
    p.add_argument("--neighbours-limit", type=whole(0, 10**9), metavar="N",
                   help="search N evenly spaced training images for the nearest ones (default: "
                        "all of an in-memory set, 10000 of a store's or folder's; 0: all)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.inference.figure_data import figures_of_checkpoint
    from alexnet.processes import Stopped
    from alexnet.runtime import StopFlag

    data = existing_data(args.data)
    out = Path(args.out) if args.out else None
    if out is not None and (out.exists() or out.is_symlink()) and not out.is_dir():
        what = ("a file" if out.is_file() else "a link to nothing, or to itself"
                if out.is_symlink() and not out.exists() else "a device, pipe or socket")  # fmt: skip
        raise UserError(f"--out {out}: {what}, not a folder for the figures")
    if out is not None and not out.exists() and not out.absolute().parent.is_dir():
        raise UserError(f"--out {out}: its folder {out.absolute().parent} does not exist; the "
                        "figures' folder is made, not the folders above it")  # fmt: skip
    try:
        with StopFlag():  # a signal midway leaves none of the set (figure_data.write_figures)
            written, data, tb = figures_of_checkpoint(
                args.run, data, Path(args.out) if args.out else None, args.split,
                args.neighbours_limit, progress=sys.stderr.isatty() and not args.no_progress)  # fmt: skip
    except Stopped as exc:
        print(f"alexnet figures: stopped by signal {exc.signum}; nothing was kept",
              file=sys.stderr)  # fmt: skip
        sys.exit(128 + exc.signum)
    for path in written.values():
        print(path)
    if data.neighbours is None:
        print(f"{args.data}: no training images apart from the ones shown; Figure 4 right "
              "(nearest training images) left out")  # fmt: skip
    else:
        print(f"neighbours searched among {data.searched} of {data.training} training images")
    print(f"TensorBoard: {tb} (tensorboard --logdir {tb})")

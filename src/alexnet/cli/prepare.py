"""``alexnet prepare``: decode a folder of images once into a store; verify a store."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from alexnet.cli.options import (
    MEGAPIXELS,
    UserError,
    folder_name,
    given,
    whole,
)


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="decode a folder of images once into a store for training",
                       description="Decode, rescale (short side 256) and centre-crop every image "
                       "once into a store that training reads without decoding, with the "
                       "training set's mean image and colour PCA. Resumes after a kill.")  # fmt: skip
    p.add_argument("paths", type=given, nargs="+", metavar="PATH",
                   help="SRC OUT: the images (train/<class>/*, val/<class>/*, ILSVRC's flat val/ "
                        "with its labels, or <wnid>_*.JPEG files; a folder or a .tar(.gz)) and "
                        "the store folder to write; with --verify, the store alone")  # fmt: skip
    p.add_argument("--split", action="append", metavar="NAME", type=folder_name,
                   help="prepare only this split (repeatable; a flat folder is one split, "
                        "train unless named)")  # fmt: skip
    p.add_argument("--layout", default="raw", choices=("raw", "jpeg", "files"),
                   help="raw uint8 (fastest, largest), jpeg at 256 (about 1/6 the size), or "
                        "files (an index of the originals, decoded at each use)")  # fmt: skip
    p.add_argument(
        "--size", type=whole(8, 4096), default=256, help="stored side in pixels (default 256)"
    )
    p.add_argument("--workers", type=whole(0, 256),
                   help="processes (default: every core; 0: this one)")  # fmt: skip
    p.add_argument(
        "--chunk", type=whole(1, 100_000), default=1000, help="images per chunk (default 1000)"
    )
    p.add_argument(
        "--quality", type=whole(1, 100), help="JPEG quality of --layout jpeg (default 90)"
    )
    p.add_argument("--max-megapixels", type=MEGAPIXELS, default=64.0,
                   help="larger images are skipped and listed (default 64)")  # fmt: skip
    p.add_argument("--verify", action="store_true",
                   help="check a store's chunks against their sha256: alexnet prepare --verify STORE")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.data.prepare import Plan, finished_chunks, prepare, verify_store
    from alexnet.data.store import open_store
    from alexnet.files import WriteError
    from alexnet.processes import Stopped
    from alexnet.runtime import StopFlag

    if args.verify:
        if len(args.paths) != 1:
            raise UserError("--verify takes one store folder: alexnet prepare --verify STORE")
        problems = verify_store(Path(args.paths[0]))
        for line in problems:
            print(line)
        splits = ", ".join(sorted(open_store(Path(args.paths[0])).meta["splits"]))
        state = (
            f"damaged: {len(problems)} problem(s)" if problems else "every chunk matches its sha256"
        )
        print(f"{args.paths[0]}: {state} (splits prepared: {splits})")  # a split never prepared
        # is not in the store: naming those that are shows it missing
        sys.exit(1 if problems else 0)
    if len(args.paths) != 2:
        raise UserError("give the images and the store to write: alexnet prepare SRC OUT")
    src, out = map(Path, args.paths)
    if args.quality is not None and args.layout != "jpeg":
        raise UserError(f"--quality {args.quality}: applies to --layout jpeg only (this store's "
                        f"layout is {args.layout})")  # fmt: skip
    plan = Plan(args.layout, args.size, 3, args.quality or Plan.quality,
                int(args.max_megapixels * 1e6))  # fmt: skip
    workers = len(os.sched_getaffinity(0)) if args.workers is None else args.workers
    try:
        with StopFlag():  # SIGTERM as Ctrl-C: the workers end now, the chunks done are kept
            meta = prepare(src, out, splits=args.split or None, plan=plan, workers=workers,
                           chunk=args.chunk, progress=not args.no_progress)  # fmt: skip
    except Stopped as exc:
        kept = ("the chunks written are kept, and the same command continues from them"
                if finished_chunks(out) else "no chunk was finished, so nothing was kept")  # fmt: skip
        print(f"alexnet prepare: interrupted by signal {exc.signum}; {kept}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    except WriteError as exc:
        if not finished_chunks(out):
            raise
        raise WriteError(f"{exc}; the chunks finished are kept: make room, then the same "
                         "command continues from them") from None  # fmt: skip
    for split, info in sorted(meta["splits"].items()):
        skipped = len(info["skipped"])
        listed = f" (listed in {out / split / 'skipped.txt'})" if skipped else ""
        print(f"{out}: {split} {info['images']} images, {skipped} skipped{listed}")

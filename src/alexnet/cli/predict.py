"""``alexnet predict``: the top classes of image files, with their probabilities."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alexnet.cli.options import (
    MEGAPIXELS,
    TRAINED,
    crops_option,
    given,
    precision_option,
    whole,
)


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="top classes of image files, with probabilities",
                       description="The top classes of each image, with their names and "
                       "probabilities, preprocessed as the network's training images were. A file "
                       "that cannot be read is reported and the others answered; the exit status "
                       "is 1 when any failed.")  # fmt: skip
    p.add_argument("checkpoint", type=given, metavar="CHECKPOINT", help=TRAINED)
    p.add_argument(
        "images", type=given, nargs="+", metavar="IMAGE", help="image files of any size and mode"
    )
    p.add_argument("--top", type=whole(1, 100_000), default=5, help="classes per image (default 5)")
    crops_option(p)
    precision_option(p, "fp32")
    p.add_argument("--max-megapixels", type=MEGAPIXELS,
                   help="larger images are refused (default: the network's data.max_megapixels, "
                        "64 unless its recipe said otherwise)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the answers as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import json

    from alexnet.inference.predict import predict_files
    from alexnet.inference.trained import load_trained

    net = load_trained(args.checkpoint)
    answers = predict_files(
        net,
        [Path(p) for p in args.images],
        top=args.top,
        crops=args.crops,
        precision=args.precision,
        max_megapixels=args.max_megapixels,
    )
    if args.json:
        print(json.dumps([a.to_dict() for a in answers], indent=1))
    for a in answers:
        if a.error:
            print(f"alexnet predict: {a.image}: {a.error}", file=sys.stderr)
        elif not args.json:
            print(a.image)
            for cls, name, p in a.top:
                print(f"  {100 * p:6.2f}%  {name}" + (f" ({cls})" if cls != name else ""))
    sys.exit(1 if any(a.error for a in answers) else 0)

"""``alexnet lrn-divisor``: how much each LRN layer divides by, on given images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alexnet.cli.options import (
    TRAINED,
    given,
    whole,
)


def add_parser(sub) -> None:
    from alexnet.models import NETWORKS

    p = sub.add_parser("lrn-divisor", help="how much each LRN layer divides by, on given images",
                       description="The distribution of LRN's divisor (k + alpha * sum a^2)^beta "
                       "at every LRN layer (percentiles over images, positions and channels), "
                       "under both conventions of alpha (the paper's alpha, and alpha/n as "
                       "cuda-convnet, Caffe and torch use). A constant 2^0.75 = 1.682 means the "
                       "layer only divides: its activations are too small to normalise. An image "
                       "that cannot be read is named and left out; the exit status is then 1, as "
                       "predict's.")  # fmt: skip
    p.add_argument("network", type=given, metavar="NETWORK",
                   help=f"{TRAINED}; or a network's name ({', '.join(NETWORKS)}) for it at its "
                        "initialisation")  # fmt: skip
    p.add_argument(
        "images",
        type=given,
        nargs="+",
        metavar="IMAGE",
        help="image files (the centre view of each)",
    )
    p.add_argument("--scale", choices=("paper", "unit"),
                   help="a network at initialisation only: 'paper' feeds values 0-255 minus the "
                        "mean, as the paper did (default); 'unit' divides by ImageNet's deviation "
                        "too (a trained network's images are prepared as it was trained)")  # fmt: skip
    p.add_argument("--seed", type=whole(0, 2**63 - 1),
                   help="a network at initialisation only: its seed (default 0)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    from alexnet.inference.lrn_divisor import describe, format_table, measure, open_network

    net = open_network(args.network, args.scale, args.seed)
    rows, skipped = measure(net, [Path(p) for p in args.images])
    heading = describe(net, len(args.images) - len(skipped))
    if args.json:
        print(json.dumps({"network": heading, "layers": [asdict(r) for r in rows]}, indent=1))
    else:
        print(format_table(rows, heading))
    for line in skipped:
        print(f"alexnet lrn-divisor: skipped {line}", file=sys.stderr)
    sys.exit(1 if skipped else 0)  # a script sees that the figures leave an image out

"""``alexnet summary``: the layer table of a network, with its sizes and costs."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from alexnet.models import NETWORKS

    p = sub.add_parser("summary", help="print the layer table of a network")
    p.add_argument(
        "--arch", default="alexnet", choices=list(NETWORKS), help="network (default alexnet)"
    )
    p.add_argument(
        "--input", help="input shape CxHxW (default: the network's own, 3x227x227 for alexnet)"
    )
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="network option, e.g. -o lrn=false -o two_towers=false -o pooling=non-overlapping")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.config import split_assignment
    from alexnet.models.summary import format_table, parse_input, summarise, to_json

    shape = parse_input(args.input) if args.input else None
    summary = summarise(args.arch, shape, **dict(split_assignment(o) for o in args.option))
    print(to_json(summary) if args.json else format_table(summary))

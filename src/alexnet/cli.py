"""The ``alexnet`` command: one entry point, one sub-command per job.

Errors a user can fix (bad paths, unknown names, malformed options) print one line and exit 2;
anything else is a bug and keeps its traceback. ALEXNET_DEBUG=1 shows the traceback always.
"""

from __future__ import annotations

import argparse
import os
import sys

from alexnet import __version__
from alexnet.config import split_assignment


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def _model_options(items: list[str]) -> dict:
    return dict(split_assignment(item) for item in items)


def cmd_summary(args: argparse.Namespace) -> None:
    from alexnet.summary import format_table, parse_input, summarise, to_json

    shape = parse_input(args.input) if args.input else None
    summary = summarise(args.arch, shape, **_model_options(args.option))
    print(to_json(summary) if args.json else format_table(summary))


def cmd_train(args: argparse.Namespace) -> None:
    from alexnet.train import train_from_args

    train_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    from alexnet.models import MODELS

    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky, Sutskever and Hinton, 2012): networks, training, tools.",
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="print the layer table of a network")
    p.add_argument(
        "--arch", default="alexnet", choices=list(MODELS), help="network (default alexnet)"
    )
    p.add_argument(
        "--input", help="input shape CxHxW (default: the network's own, 3x227x227 for alexnet)"
    )
    p.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="network option, e.g. -o lrn=false -o two_towers=false -o pooling=non-overlapping",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a network from a recipe, or resume a run")
    p.add_argument(
        "--recipe", help="recipe name (fashion-mnist, cifar10, imagenet-paper) or .toml path"
    )
    p.add_argument("--data", help="data folder (overrides data.root)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a recipe key, e.g. --set optim.lr=0.02 --set data.batch_size=256",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    p.add_argument("--runs", default="runs", help="folder that holds run folders (default runs)")
    p.add_argument("--name", help="run folder name (default: recipe and time)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as exc:
        if os.environ.get("ALEXNET_DEBUG"):
            raise
        print(f"alexnet {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

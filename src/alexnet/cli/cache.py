"""``alexnet cache``: show or clear the cache of decoded, extracted and downloaded data."""

from __future__ import annotations

import argparse

from alexnet.cli.options import (
    UserError,
)


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="show or clear the cache of decoded and downloaded data")
    p.add_argument("action", nargs="?", choices=("info", "clear"), default="info")
    p.add_argument("parts", nargs="*", metavar="PART",
                   help="with clear: decoded, extracted, native and/or downloads (default: all "
                        "but downloads)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.data.cache import PARTS, cache_dir, cache_usage, clear_cache

    if args.action == "info" and args.parts:
        raise UserError(f"alexnet cache info takes no parts (got {' '.join(args.parts)})")
    if args.action == "clear":
        parts = args.parts or [p for p in PARTS if p != "downloads"]
        freed = clear_cache(parts)
        print(f"cleared {', '.join(parts)} in {cache_dir()}: {freed / 1e6:.1f} MB freed")
        return
    usage = cache_usage()
    print(f"{cache_dir()} ($ALEXNET_CACHE to move it)")
    for part, size in usage.items():
        print(f"  {part:10s} {size / 1e6:10.1f} MB")

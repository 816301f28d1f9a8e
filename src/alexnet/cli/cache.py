"""``alexnet cache``: show or clear the cache of decoded, extracted and downloaded data."""

from __future__ import annotations

import argparse

from alexnet.cli.options import (
    UserError,
)

ASK_ABOVE = 1e9  # bytes: clearing more asks first (a cache of ImageNet is about 40 GB)


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="show or clear the cache of decoded and downloaded data")
    p.add_argument("action", nargs="?", choices=("info", "clear"), default="info")
    p.add_argument("parts", nargs="*", metavar="PART",
                   help="with clear: decoded, extracted, native and/or downloads (default: all "
                        "but downloads)")  # fmt: skip
    p.add_argument("--yes", "-y", action="store_true",
                   help=f"clear without asking, even more than {ASK_ABOVE / 1e9:g} GB")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from alexnet.data.cache import PARTS, cache_dir, cache_usage, clear_cache

    if args.action == "info" and args.parts:
        raise UserError(f"alexnet cache info takes no parts (got {' '.join(args.parts)})")
    if args.action == "clear":
        parts = args.parts or [p for p in PARTS if p != "downloads"]
        _confirm(sum(cache_usage().get(p, 0) for p in parts if p in PARTS), args.yes)
        freed = clear_cache(parts)
        print(f"cleared {', '.join(parts)} in {cache_dir()}: {freed / 1e6:.1f} MB freed")
        kept = [e for p in parts if (cache_dir() / p).is_dir() for e in (cache_dir() / p).iterdir()]
        if kept:
            print(f"kept {len(kept)} file(s) alexnet did not write, e.g. {kept[0]}")
        return
    usage = cache_usage()
    print(f"{cache_dir()} ($ALEXNET_CACHE to move it)")
    for part, size in usage.items():
        print(f"  {part:10s} {size / 1e6:10.1f} MB")


def _confirm(size: int, yes: bool) -> None:
    """More than ASK_ABOVE is cleared only when the user says so: asked on a terminal, else
    refused without --yes (a mistaken ALEXNET_CACHE once pointed at a 41.6 GB cache)."""
    import sys

    from alexnet.data.cache import cache_dir

    if yes or size <= ASK_ABOVE:
        return
    question = f"clear {size / 1e9:.1f} GB in {cache_dir()}?"
    if not sys.stdin.isatty():
        raise UserError(f"{question} Not without --yes (nobody here to ask)")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise UserError("nothing was cleared")

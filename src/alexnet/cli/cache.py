"""``alexnet cache``: show or clear the cache of decoded, extracted and downloaded data."""

from __future__ import annotations

import argparse

from alexnet.cli.options import (
    UserError,
)

ASK_ABOVE = 1e9  # bytes: clearing more asks first (a cache of ImageNet is about 40 GB)
SHOWN = 5  # the user's files named after a clear; more are counted


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="show or clear the cache of decoded and downloaded data")
    p.add_argument("action", nargs="?", choices=("info", "clear"), default="info")
    p.add_argument("parts", nargs="*", metavar="PART",
                   help="with clear: decoded, extracted, native and/or downloads (default: all "
                        "but downloads)")  # fmt: skip
    p.add_argument("--yes", "-y", action="store_true",
                   help=f"clear without asking, even more than {ASK_ABOVE / 1e9:g} GB")  # fmt: skip
    p.set_defaults(func=run)
    p.__class__ = type("CacheParser", (type(p),), {"parse_known_args": _parts_anywhere})


def _parts_anywhere(self, args=None, namespace=None):
    """argparse fills the positionals once, before the first option between them: in
    ``cache clear --yes decoded`` the part after --yes was "unrecognized". Words left over
    are parts too (a part not known is refused by name when clearing), unless an unknown
    option is among them."""
    namespace, extras = argparse.ArgumentParser.parse_known_args(self, args, namespace)
    if any(e.startswith("-") for e in extras):  # an unknown option: all of it is said as such
        return namespace, extras
    namespace.parts = [*(namespace.parts or []), *extras]
    return namespace, []


def run(args: argparse.Namespace) -> None:
    from alexnet.data.cache import PARTS, cache_dir, cache_usage

    if args.action == "info" and args.parts:
        raise UserError(f"alexnet cache info takes no parts (got {' '.join(args.parts)})")
    if args.action == "clear":
        parts = list(dict.fromkeys(args.parts))  # "decoded decoded" was said twice
        _clear(parts or [p for p in PARTS if p != "downloads"], args.yes)
        return
    usage = cache_usage()
    print(f"{cache_dir()} ($ALEXNET_CACHE to move it)")
    for part, size in usage.items():
        print(f"  {part:10s} {size / 1e6:10.1f} MB")


def _clear(parts: list[str], yes: bool) -> None:
    """Remove what alexnet wrote in ``parts``; say what that freed (counted file by file as
    removed), and name what was kept: the user's files, and parts that are links, left whole."""
    import os

    from alexnet.data.cache import cache_dir, clear_cache, clearing
    from alexnet.files import size

    left = clearing(parts)  # what it keeps and the linked parts: the same after clearing
    _confirm(left.size(), yes)
    freed = clear_cache(parts)
    print(f"cleared {', '.join(parts)} in {cache_dir()}: {size(freed)} freed")
    if left.kept:
        shown = ", ".join(str(p) for p in left.kept[:SHOWN])
        more = f" and {len(left.kept) - SHOWN} more" if len(left.kept) > SHOWN else ""
        print(f"kept {len(left.kept)} file(s) or folder(s) alexnet did not write: "
              f"{shown}{more}")  # fmt: skip
    for link in left.linked:
        print(f"kept {link} as it is: a symbolic link (to {os.readlink(link)}), so nothing "
              "behind it was deleted; remove there what you no longer need, or the link")  # fmt: skip


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

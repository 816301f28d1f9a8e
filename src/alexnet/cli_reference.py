"""The command reference in README.md and docs/cli.md, made from the command line's own parser,
so that neither can say what the commands no longer do.

    python -m alexnet.cli_reference           # write both (between the README's markers)
    python -m alexnet.cli_reference --check   # exit 1 if either is out of date (the tests do)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from unittest import mock

from alexnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
WIDTH = "96"  # columns of the help text: the same on every machine, whatever its terminal


def commands() -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every command, in the order ``alexnet --help`` lists."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    return [(name, helps.get(name, ""), p) for name, p in sub.choices.items()]


def summary_table() -> str:
    """The README's table: each command and what it does."""
    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| [`alexnet {name}`](docs/cli.md#alexnet-{name}) | {text} |"
             for name, text, _ in commands()]  # fmt: skip
    return "\n".join(rows)


def full_reference() -> str:
    """docs/cli.md: every command's ``--help``, as it prints it."""
    with mock.patch.dict(os.environ, {"COLUMNS": WIDTH}):
        parts = ["# The command line\n",
                 "Every command's `--help`, as it prints it. Made by `python -m "
                 "alexnet.cli_reference` from the parser itself; the test suite fails when "
                 "this page is out of date.\n",
                 "```text\n" + build_parser().format_help().rstrip() + "\n```\n"]  # fmt: skip
        for name, _, parser in commands():
            parts.append(f"## alexnet {name}\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def between_markers(text: str, start: str, end: str, body: str, where: str) -> str:
    """``text`` with ``body`` in place of what stood between its ``start`` and ``end`` marker
    lines (generated tables in Markdown pages); ValueError, naming ``where``, without them."""
    if start not in text or end not in text:
        raise ValueError(f"{where}: no {start} ... {end} markers to write the table between")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}"


def with_table(readme: str) -> str:
    return between_markers(readme, START, END, summary_table(), "README.md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report what is out of date")
    args = parser.parse_args(argv)
    readme, cli = ROOT / "README.md", ROOT / "docs" / "cli.md"
    wanted = {readme: with_table(readme.read_text()), cli: full_reference()}
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path}: out of date; run: python -m alexnet.cli_reference", file=sys.stderr)
        raise SystemExit(1 if stale else 0)
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

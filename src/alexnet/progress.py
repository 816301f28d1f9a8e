"""Progress bars, one way for every command: drawn on standard error when it is a terminal
and the command was not given ``--no-progress``, never into a redirected log (where tqdm's
carriage-return redraws became hundreds of lines: 202 in one ``alexnet eval``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def shown(asked: bool = True) -> bool:
    """Whether a bar would be drawn: asked for, and standard error is a terminal."""
    return asked and sys.stderr.isatty()


def bar(iterable: Iterable | None = None, *, desc: str, unit: str, asked: bool = True,
        total: int | None = None, initial: int = 0, leave: bool = True) -> Any:  # fmt: skip
    """A tqdm bar over ``iterable`` (or counting to ``total``), disabled where not
    :func:`shown`: it then yields the same items and draws nothing."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                disable=not shown(asked), file=sys.stderr, dynamic_ncols=True)  # fmt: skip

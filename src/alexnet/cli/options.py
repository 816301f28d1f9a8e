"""What the commands share: the user's error, the types that give every number a range, and the
options several commands take."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from alexnet.errors import UserError

# What every command that uses a trained network accepts (trained.load_trained reads them all).
TRAINED = ("a checkpoint, a run folder (its best.pt), a .safetensors or .pth weights file, or "
           "'torchvision' for torchvision's ImageNet weights")  # fmt: skip


__all__ = ["TRAINED", "UserError"]  # UserError: the one error the commands print as a line


# Types for the parser: every number a user gives has a range, so zero, negative, empty and
# absurd values are refused with the flag named before anything runs (argparse adds it).
def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {low} to {high}")
        return value

    return parse


def positive(high: float, least: float = 0.0) -> Callable[[str], float]:
    """A number above 0 (and at least ``least``), at most ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (0 < value <= high and value >= least):  # also refuses nan
            low = f"at least {least:g}" if least else "above 0"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {low}, at most {high:g}")
        return value

    return parse


# An image limit in millions of pixels: one pixel at least (a smaller limit was said as 0).
MEGAPIXELS = positive(10_000, least=1e-6)


def minutes(text: str) -> float:
    """A time budget in minutes: at least one (a sweep alone takes longer), at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 7 * 24 * 60:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is out of range: 1 to {7 * 24 * 60} minutes")
    return value


def names(text: str) -> list[str]:
    """A comma-separated list of one or more names."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of names, none empty")
    return items


def given(text: str) -> str:
    """A path or name that says something: an empty one meant the default folder silently
    (``--runs ""`` wrote to runs/, ``ALEXNET_CACHE=""`` found the user's own cache)."""
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: empty; give a path or name (an option left "
                                         "out takes its default)")  # fmt: skip
    return text


def folder_name(text: str) -> str:
    """One plain folder name: a split of a data set."""
    if not text or text in (".", "..") or "/" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: one folder name, e.g. train or val")
    return text


def rates(text: str) -> list[float]:
    """A comma-separated list of learning rates, each above 0 and at most 10."""
    one = positive(10.0)
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("needs one or more rates, e.g. 0.01,0.03")
    return [one(t) for t in items]


def existing_data(data: str | None) -> Path | None:
    if data is not None and not Path(data).exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    return Path(data) if data is not None else None


def crops_option(p) -> None:
    p.add_argument("--crops", type=int, choices=(1, 2, 10),
                   help="1: the centre; 2: and its mirror image; 10: the paper's corners and "
                        "centre, each mirrored too (default: as the run evaluated, 2 with "
                        "eval.tta_flip, else 1)")  # fmt: skip


def precision_option(p, default: str | None) -> None:
    said = (
        default or "the recipe's train.precision (auto: bfloat16 where the hardware is fast at it)"
    )
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=default,
                   help=f"arithmetic of the network (default: {said})")  # fmt: skip


def eval_data_option(p) -> None:
    p.add_argument("--data", type=given,
                   help="a store (alexnet prepare) or an image folder, or the data of a network "
                        "trained in memory (as its recipe's --data); default: the data it was "
                        "trained on")  # fmt: skip

"""Data: sources that yield uint8 image sets, batch augmentations, and the batch loader."""

from __future__ import annotations

from alexnet.data.augment import BatchAugment, normalise, random_crop, random_flip
from alexnet.data.loader import BatchLoader
from alexnet.data.sources import (
    ImageSet,
    load_cifar10,
    load_fashion_mnist,
    load_folder_pair,
)

SOURCES = ("fashion-mnist", "cifar10", "imagefolder")


def load_source(
    source: str,
    root: str | None,
    image_size: int | None = None,
    channels: int = 3,
    verify: bool = True,
):
    """(train, test) ImageSets for a recipe's ``data.source``."""
    from pathlib import Path

    if source == "fashion-mnist":
        return load_fashion_mnist(root or None, verify=verify)
    if source == "cifar10":
        return load_cifar10(root or None)
    if source == "imagefolder":
        if not root:
            raise ValueError(
                "the imagefolder source needs --data DIR (with train/<class>/* and val/<class>/*)"
            )
        if not Path(root).exists():
            raise FileNotFoundError(f"--data {root}: no such folder")
        return load_folder_pair(Path(root), size=image_size, channels=channels, tag="imagefolder")
    raise ValueError(f"unknown data source {source!r}; valid: {', '.join(SOURCES)}")


__all__ = [
    "SOURCES",
    "BatchAugment",
    "BatchLoader",
    "ImageSet",
    "load_cifar10",
    "load_fashion_mnist",
    "load_folder_pair",
    "load_source",
    "normalise",
    "random_crop",
    "random_flip",
]

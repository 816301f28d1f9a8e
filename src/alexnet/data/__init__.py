"""Data: sources that yield uint8 image sets, batch augmentations, and the batch loader.

Each source is one module that declares a :class:`DataSource` (how to load it, its channels,
its normalisation, its image size); ``DATA_SOURCES`` maps recipe names to them and
``SOURCES`` is the tuple of those names. In-memory sources yield an :class:`ImageSet`;
``store`` yields ``StoreSplit`` readers of a prepared store (``alexnet prepare``), which the
loader reads batch by batch; both are a :class:`~alexnet.data.source.Split`.
"""

from __future__ import annotations

from alexnet.data import cifar10, fashion_mnist, imagefolder, store
from alexnet.data.augment import BatchAugment, normalise, random_crop, random_flip
from alexnet.data.imageset import ImageSet
from alexnet.data.loader import BatchLoader
from alexnet.data.source import DataSource, Request, Split
from alexnet.errors import UserError

DATA_SOURCES: dict[str, DataSource] = {
    s.name: s for s in (fashion_mnist.SOURCE, cifar10.SOURCE, imagefolder.SOURCE, store.SOURCE)
}
SOURCES = tuple(DATA_SOURCES)


def load_source(name: str, request: Request) -> tuple[Split, Split]:
    """(train, test) ImageSets of the source ``name``."""
    if name not in DATA_SOURCES:
        raise UserError(f"unknown data source {name!r}; valid: {', '.join(SOURCES)}")
    return DATA_SOURCES[name].load(request)


__all__ = [
    "DATA_SOURCES",
    "SOURCES",
    "BatchAugment",
    "BatchLoader",
    "DataSource",
    "ImageSet",
    "Request",
    "load_source",
    "normalise",
    "random_crop",
    "random_flip",
]

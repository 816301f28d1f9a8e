"""What a data source declares about itself, so the recipe and the loader need no list of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alexnet.data.images import MAX_PIXELS
from alexnet.data.imageset import ImageSet


@dataclass(frozen=True)
class Request:
    """What a recipe asks of a source: where, at which size, how many channels."""

    root: str  # "" where the source knows where to look
    size: int
    channels: int
    verify: bool = True
    max_pixels: int = MAX_PIXELS


@dataclass(frozen=True)
class DataSource:
    name: str
    load: Callable[[Request], tuple[ImageSet, ImageSet]]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int | None = None  # the images' fixed size; None: resized to the request's

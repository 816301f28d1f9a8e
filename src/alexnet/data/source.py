"""What a data source declares about itself, so the recipe and the loader need no list of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from alexnet.data.images import MAX_PIXELS
from alexnet.data.stats import PixelStats


@dataclass(frozen=True)
class Request:
    """What a recipe asks of a source: where, at which size, how many channels."""

    root: str  # "" where the source knows where to look
    size: int
    channels: int
    verify: bool = True
    max_pixels: int = MAX_PIXELS


class Split(Protocol):
    """What training, evaluation and the figures ask of a split of any source: an in-memory
    :class:`ImageSet` and a store's ``StoreSplit`` both answer, so a new kind of source (one
    that streams, say) is one module and no caller asks which kind it holds."""

    labels: torch.Tensor
    classes: list[str]
    skipped: list[tuple[str, str]]
    streamed: bool  # read from storage at each use (reading workers help), not held in memory

    @property
    def source(self) -> str: ...
    def __len__(self) -> int: ...
    def subset(self, count: int) -> Split: ...
    def pixel_stats(self) -> PixelStats: ...
    @property
    def stored_shape(self) -> tuple[int, int, int]: ...  # (H, W, C) of an image as stored
    def evaluation_record(self) -> dict: ...
    def read_stored(self, chosen: torch.Tensor) -> tuple: ...


@dataclass(frozen=True)
class DataSource:
    name: str
    load: Callable[[Request], tuple[Split, Split]]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int | None = None  # the images' fixed size; None: resized to the request's
    # Its images are stored larger than the network's input and cut to it per batch (the
    # paper's 256 and 227): evaluation then cuts the test views, and reads other images so.
    stored_larger: bool = False

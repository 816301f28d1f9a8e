"""What every data source yields: uint8 images in memory with labels, class names, and the
files it had to leave out (each with the reason), so nothing is skipped silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet.data.stats import PixelStats, image_stats
from alexnet.errors import UserError
from alexnet.files import NAMES

SHOWN_SKIPS = 5  # files named in the one-line summary; the run folder gets the full list


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), the class names, and the skipped
    files as (path, reason) pairs."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        outside = (self.labels < 0) | (self.labels >= len(self.classes))
        if outside.any():  # else an IndexError deep in the loss, at the first step
            raise UserError(f"{self.source or 'the data'}: label {int(self.labels[outside][0])} "
                            f"of {int(outside.sum())} image(s) is not one of the "
                            f"{len(self.classes)} classes (0 to {len(self.classes) - 1}); a "
                            "damaged or foreign data file")  # fmt: skip

    # What callers ask of a split, whichever kind it is (store.StoreSplit answers the same):
    streamed = False  # all in memory: a batch is one gather, no reading workers needed

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of each image, the shape of its mean image."""
        _, c, h, w = self.images.shape
        return h, w, c

    def pixel_stats(self) -> PixelStats:
        """The mean image and colour PCA of these images (the paper's preprocessing)."""
        return image_stats(self.images)

    def evaluation_record(self) -> dict:
        """What evaluating a network trained on this split needs beyond its recipe: nothing
        (the data source is named in the recipe)."""
        return {}

    def read_stored(self, chosen: torch.Tensor):
        """Images ``chosen`` as stored (uint8), their labels, which could be read (all) and
        the files that could not (none)."""
        ok = torch.ones(len(chosen), dtype=torch.bool)
        return self.images[chosen], self.labels[chosen], ok, []

    def subset(self, count: int) -> ImageSet:
        """``count`` of the images (data.limit_train, limit_test); the skip list stays."""
        keep = subset_indices(self.labels, count)
        return ImageSet(
            self.images[keep], self.labels[keep], self.classes, self.source, self.skipped
        )

    def skip_summary(self, listed_in: Path | None = None) -> str | None:
        return skip_line(f"{self.source}: skipped", self.skipped, listed_in)

    def staleness(self) -> str | None:
        """Images held in memory were read now: never out of date (a store's may be)."""
        return None


def subset_indices(labels: torch.Tensor, count: int) -> torch.Tensor | slice:
    """Which ``count`` images a limited run uses: the first ones of a set in mixed order
    (Fashion-MNIST's files, CIFAR-10's batches); evenly spaced ones of a set stored class by
    class (image folders, stores), whose first images would be of the first classes only."""
    n = len(labels)
    if count >= n or not bool((labels[1:] >= labels[:-1]).all()):
        return slice(0, count)
    return torch.linspace(0, n - 1, count).round().long()


def skip_line(what: str, skipped: list[tuple[str, str]], listed_in: Path | None) -> str | None:
    """One line naming the first few skipped files (each with its folder: a class folder's
    files are often named alike, 0001.jpg in every class) and why, or None if none were."""
    if not skipped:
        return None
    shown = "; ".join(f"{_with_folder(p)} ({why})" for p, why in skipped[:SHOWN_SKIPS])
    more = len(skipped) - SHOWN_SKIPS
    tail = f"; and {more} more" if more > 0 else ""
    where = f"; all listed in {listed_in}" if listed_in else ""
    return f"{what} {len(skipped)} file(s): {shown}{tail}{where}"


def _with_folder(path: str) -> str:
    return "/".join(Path(path).parts[-2:])


def write_skip_list(sets: list[ImageSet], path: Path) -> bool:
    """Every skipped file of ``sets`` into ``path`` (tab-separated path and reason); False if
    there were none and nothing was written."""
    rows = [f"{p}\t{why}" for s in sets for p, why in s.skipped]
    if not rows:
        return False
    with open(path, "w", encoding="utf-8", errors=NAMES) as f:
        f.write("file\treason\n" + "\n".join(rows) + "\n")
    return True

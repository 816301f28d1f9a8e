"""``alexnet predict``: a trained network's top classes for image files, with their names and
probabilities.

Each image is prepared as the network's own images were: for a network trained from a store
(or published weights), the short side rescaled to the stored side and the centre kept, then
the network's crop (or the paper's ten) normalised as training normalised it; for a network
trained in memory, rescaled to its input size in its number of channels. Files of any size and
mode are read (grey, CMYK, palette, 16-bit); one that cannot be read is answered with why, and
the others are still answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet.data.images import decode_image, resize_image
from alexnet.errors import UserError
from alexnet.files import NAMES
from alexnet.inference.prepared import infer
from alexnet.inference.trained import Trained
from alexnet.inference.views import (
    batch_maker,
    chosen_crops,
    full_side,
    prepared,
    views_of,
)


@dataclass
class Answer:
    """One file's answer: its top classes as (class, name, probability), or why it failed."""

    image: str
    top: list[tuple[str, str, float]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        # A name that is not UTF-8 as the terminal shows it (\xNN): its lone surrogates made
        # JSON that strict readers refuse.
        image = self.image.encode("utf-8", NAMES).decode("utf-8")
        error = self.error.encode("utf-8", NAMES).decode("utf-8") if self.error else self.error
        return {"image": image, "error": error,
                "predictions": [{"class": c, "name": n, "probability": p}
                                for c, n, p in self.top]}  # fmt: skip


@dataclass(frozen=True)
class _Stored:
    """What a batch maker reads of the split that image files stand in for: the stored side,
    the channels, and whether the network was trained from a store (then a file is read as a
    store's image is: rescaled, stored, then cropped)."""

    size: int
    channels: int
    streamed: bool = True


def file_maker(net: Trained):
    """The batch maker for images read by :func:`read_image`: for a network trained from a
    store, one that sees them as a store's split of their side."""
    return batch_maker(net, _Stored(full_side(net), 3, net.from_store))


def read_image(net: Trained, path: Path, max_megapixels: float | None = None) -> torch.Tensor:
    """``path`` as the network's views are cut from it: (S, S, C) at the stored side for a
    network trained from a store, (C, H, W) at its input size otherwise; ValueError says why
    it cannot be read (``max_megapixels``: by default the recipe's limit). Published weights are decoded at full size, as their own preprocessing
    does; alexnet's stores decode large JPEGs at a reduced scale first (images.py)."""
    channels = 3 if net.from_store else net.recipe.data.channels
    side = full_side(net)
    limit = int((max_megapixels or net.recipe.data.max_megapixels) * 1e6)
    image, why = decode_image(path, channels, None if net.published else side, limit,
                              rescaled=side)  # fmt: skip
    if image is None:
        raise UserError(why)
    image = net.published.rescale(image) if net.published else resize_image(image, side)
    return image.permute(1, 2, 0).contiguous() if net.from_store else image


def predict_files(
    net: Trained, paths: list[Path], *, top: int = 5, crops: int | None = None, batch: int = 32,
    precision: str = "fp32", max_megapixels: float | None = None,
) -> list[Answer]:  # fmt: skip
    """The ``top`` classes of every file, its softmax averaged over ``crops`` views (by default
    those the run evaluated with). In float32 by default: a few images take no time, and the
    answer is the same on every machine (bfloat16, where the CPU is fast at it, moves
    probabilities by about 1e-3, enough to swap two close classes)."""
    crops = chosen_crops(net, crops)
    if top < 1:
        raise UserError(f"--top {top}: must be 1 or more")
    model, device, amp, layout = prepared(net, precision)
    views = views_of(net, crops)
    maker = file_maker(net)
    answers = [Answer(str(p)) for p in paths]
    for start in range(0, len(paths), batch):
        images, rows = [], []
        for i in range(start, min(start + batch, len(paths))):
            try:
                images.append(read_image(net, paths[i], max_megapixels))
                rows.append(i)
            except ValueError as exc:
                answers[i].error = str(exc)
        if not images:
            continue
        stack = torch.stack(images)
        probs = sum(infer(model, maker.view(stack, v, device, layout), amp)
                    .softmax(1).cpu() for v in views) / len(views)  # fmt: skip
        best = probs.topk(min(top, probs.shape[1]), dim=1)
        for row, values, indices in zip(rows, best.values, best.indices, strict=True):
            answers[row].top = [(net.classes[j], net.names[j], float(v))
                                for v, j in zip(values.tolist(), indices.tolist(), strict=True)]  # fmt: skip
    return answers

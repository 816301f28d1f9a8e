"""How a trained network sees images, shared by eval, predict, figures and lrn-divisor: the
batches of a split read as stored (the images that cannot be read counted), the network's
normalisation, its views (crops.py) and the network made ready on the fastest device here."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from alexnet.data.batches import Batches, batch_maker_for
from alexnet.data.imageset import ImageSet
from alexnet.data.store import StoreSplit
from alexnet.errors import UserError
from alexnet.inference.crops import CROPS, View
from alexnet.inference.prepared import prepare_for_inference
from alexnet.inference.trained import Trained
from alexnet.runtime import pick_channels_last, pick_device, pick_precision


class BatchReads(Dataset):
    """Batch b of ``images`` (uint8, as stored), its labels, and which images could be read;
    with ``indices``, of those images only, in their order."""

    def __init__(
        self, images: StoreSplit | ImageSet, batch: int, indices: torch.Tensor | None = None
    ) -> None:
        self.images, self.batch = images, batch
        self.indices = torch.arange(len(images.labels)) if indices is None else indices

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch)

    def chosen(self, b: int) -> torch.Tensor:
        """The positions in ``images`` of batch b."""
        return self.indices[b * self.batch : (b + 1) * self.batch]

    def __getitem__(self, b: int):
        return self.images.read_stored(self.chosen(b))


def batch_maker(net: Trained, data: StoreSplit | ImageSet) -> Batches:
    """How ``net``'s inputs are normalised, made once per network: a store maker computes its
    scaled mean image on first use and keeps it."""
    return batch_maker_for(data, net.input_size, net.mean(), net.std())


def chosen_crops(net: Trained, crops: int | None) -> int:
    """``--crops``, or by default the views the run evaluated with (2 with ``eval.tta_flip``);
    ten only for networks trained from a store of larger images."""
    crops = crops or (2 if net.recipe.eval.tta_flip else 1)
    if crops not in CROPS:
        raise UserError(f"--crops {crops}: choose 1, 2 (with its mirror image) or 10")
    if crops > 2 and not net.from_store:
        raise UserError(f"--crops {crops}: {net.path} was trained in memory on "
                         f"{net.input_size}x{net.input_size} images, so only 1 or 2 (with its "
                         "mirror image) apply; 10 crops need a network trained from a store "
                         "of larger images")  # fmt: skip
    return crops


def full_side(net: Trained) -> int:
    """The side of the images a network's views are cut from: the stored images' for a
    network trained from a store, else its own input's."""
    return net.stored_size if net.from_store else net.input_size


def views_of(net: Trained, crops: int) -> list[View]:
    """The views of ``crops`` (see :func:`chosen_crops`) for ``net``'s images."""
    return CROPS[crops](full_side(net), net.input_size)


def precision_of(net: Trained, precision: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast type: ``precision`` (auto, fp32, bf16) or, by default, the recipe's."""
    return pick_precision(precision or net.recipe.train.precision, device)


def prepared(net: Trained, precision: str | None = None):
    """``net``'s network ready to answer on the fastest device here (changed in place: it was
    loaded for this), with that device, its autocast type and whether it is channels-last."""
    device, layout = pick_device(0), pick_channels_last("auto")
    amp = precision_of(net, precision, device)
    return prepare_for_inference(net.model, device, amp, layout), device, amp, layout

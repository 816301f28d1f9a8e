"""Published weights that load into the networks here, each with what it takes to use them as
their authors did: the network, the file and its checksum, the preprocessing, the classes.

One entry today: torchvision's ImageNet AlexNet (``alexnet-owt-7be5be79.pth``), the one-tower
network of "One weird trick" (Krizhevsky 2014), which loads unchanged into ``alexnet-owt``.
Its evaluation rescales the short side to 256, takes the central 224x224 crop and normalises
by the per-channel ImageNet mean and deviation; torchvision reports 56.522% top-1 and 79.066%
top-5 accuracy on the ILSVRC-2012 validation set with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from alexnet.models.alexnet import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class PublishedWeights:
    name: str  # what the command line accepts in place of a checkpoint
    arch: str  # the registered network they load into
    file: str  # torch.hub's name: the first eight hex digits of its sha256 end it
    url: str
    sha256_prefix: str
    resize: int  # the short side is rescaled to this ...
    crop: int  # ... and the central crop of this side is the input
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    num_params: int
    top1_acc: float  # as published, ILSVRC-2012 validation, one centre crop
    top5_acc: float

    def rescale(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) with its short side rescaled to ``resize`` and the central square
        kept, by the functions torchvision's own preset uses for these weights: its first
        functional API, whose uint8 resize rounds differently from the second's (by one level
        in some pixels, measured on the ImageNet sample), so inputs equal torchvision's."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        image = F.resize(image, [self.resize], InterpolationMode.BILINEAR, antialias=True)
        return F.center_crop(image, [self.resize])

    def local_path(self) -> Path:
        """Where torch.hub keeps the file ($TORCH_HOME/hub/checkpoints), so a copy that
        torchvision has downloaded already is used as it is."""
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints" / self.file


PUBLISHED: dict[str, PublishedWeights] = {
    "torchvision": PublishedWeights(
        name="torchvision", arch="alexnet-owt", file="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256_prefix="7be5be79", resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        num_classes=1000, num_params=61_100_840, top1_acc=56.522, top5_acc=79.066,
    ),
}  # fmt: skip


@cache
def imagenet_classes() -> tuple[list[str], list[str]]:
    """The 1,000 ILSVRC-2012 classes in the order every ImageNet network's outputs follow
    (sorted WordNet ids) and a readable name for each."""
    text = resources.files("alexnet.models").joinpath("imagenet_class_index.json").read_text()
    index = json.loads(text)
    entries = [index[str(i)] for i in range(len(index))]
    return [wnid for wnid, _ in entries], [name.replace("_", " ") for _, name in entries]

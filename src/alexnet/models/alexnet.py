"""The AlexNets: the paper's network, torchvision's one-tower layout, and the small one.

All three are one class, :class:`AlexNet`, built from a table of conv rows: the paper's
(section 3.5, Figure 2), torchvision's one-tower variant ("one weird trick", Krizhevsky 2014)
whose published weights load unchanged, and the same design scaled to 28x28 and 32x32 images.

The input of ``alexnet`` is 3x227x227. The paper says 224x224, but 224 cannot give conv1's 55x55
output with an 11x11 kernel at stride 4: (227 - 11) / 4 + 1 = 55, while 224 gives 54 (and a 5x5
map after conv5, not 6x6). Every reproduction that keeps the paper's layer sizes feeds 227.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from alexnet.errors import UserError
from alexnet.models.blocks import (
    DROPOUT_PLACEMENTS,
    INITS,
    Blocks,
    Conv,
    Network,
    NetworkOptions,
    feature_stack,
    initialise,
    map_size,
)
from alexnet.settings import setting

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PAPER_TABLE = (
    Conv(96, 11, stride=4, norm=True, pool=0),  # conv1: 55x55x96 -> pool 27x27
    Conv(256, 5, padding=2, towers=True, norm=True, pool=0),  # conv2: 27x27x256 -> pool 13x13
    Conv(384, 3, padding=1),  # conv3 sees both towers
    Conv(384, 3, padding=1, towers=True),  # conv4
    Conv(256, 3, padding=1, towers=True, pool=0),  # conv5: 13x13x256 -> pool 6x6x256 = 9216
)
OWT_TABLE = (
    Conv(64, 11, stride=4, padding=2, norm=True, pool=0),
    Conv(192, 5, padding=2, towers=True, norm=True, pool=0),
    Conv(384, 3, padding=1),
    Conv(256, 3, padding=1, towers=True),
    Conv(256, 3, padding=1, towers=True, pool=0),
)


def small_table(widths: Sequence[int]) -> tuple[Conv, ...]:
    """conv1 is 5x5 at stride 1 (an 11x11/4 kernel would leave nothing of a 28x28 image); the two
    normalised and pooled stages halve the map twice (28 -> 14 -> 7, 32 -> 16 -> 8), conv3-5 are
    3x3 as in the paper, and the last pool leaves 3x3 (overlapping) or 4x4 (non-overlapping)."""
    c1, c2, c3, c4, c5 = widths
    return (
        Conv(c1, 5, padding=2, norm=True, pool=1),
        Conv(c2, 5, padding=2, towers=True, norm=True, pool=1),
        Conv(c3, 3, padding=1),
        Conv(c4, 3, padding=1, towers=True),
        Conv(c5, 3, padding=1, towers=True, pool=0),
    )


class AlexNet(nn.Module):
    """Five conv layers from ``table``, then fc6, fc7 (``hidden`` wide) and fc8.

    ``input_size`` fixes the input side, checked in ``forward``; ``None`` pools the last map
    adaptively to 6x6 as torchvision does, so any input of at least 63 pixels fits.
    """

    def __init__(
        self,
        table: Sequence[Conv],
        options: AlexNetOptions,
        hidden: int = 4096,
        input_size: int | None = 227,
    ) -> None:
        super().__init__()
        b = Blocks(options)
        self.input_size = input_size
        self.features = feature_stack(table, b)
        if input_size is None:
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            side = 6
        else:
            side = map_size(table, input_size, options.pooling)
            if side < 1:
                raise UserError(f"input_size {input_size}: a {input_size}x{input_size} input "
                                 "leaves no feature map")  # fmt: skip
        self.classifier = b.classifier(
            table[-1].width * side * side, hidden, options.dropout_placement
        )
        conv = [m for m in self.features if isinstance(m, nn.Conv2d)]
        fc = [m for m in self.classifier if isinstance(m, nn.Linear)]
        initialise(self, options.init, bias_one=[conv[1], conv[3], conv[4], fc[0], fc[1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        if size is not None and x.shape[-2:] != (size, size):
            hint = (
                ": the paper's '224' gives a 54x54 conv1 map, not 55x55; crop or resize to 227 "
                "(or use alexnet-owt, which pools adaptively)"
                if size == 227
                else f"; resize the images to {size} or build the network with input_size"
            )
            raise UserError(
                f"this network takes {size}x{size} inputs, got {x.shape[-2]}x{x.shape[-1]}{hint}"
            )
        x = self.features(x)
        if self.input_size is None:
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


@dataclass(frozen=True)
class AlexNetOptions(NetworkOptions):
    """The switches of the AlexNets: every network's, and where dropout acts."""

    # "paper": on the outputs of fc6 and fc7 (section 4.2; Caffe's drop6 and drop7).
    # "torchvision": on the inputs of fc6 and fc7, i.e. pool5's and fc6's outputs, the order
    # torchvision's AlexNet and its published weights were trained with.
    dropout_placement: str = setting("paper", choices=DROPOUT_PLACEMENTS)


@dataclass(frozen=True)
class OneTowerOptions(AlexNetOptions):
    """torchvision's layout: no LRN, one tower, PyTorch's initialisation, dropout on the inputs
    of fc6 and fc7 (the order its published weights were trained with)."""

    lrn: bool = setting(False)
    two_towers: bool = setting(False)
    init: str = setting("torch", choices=INITS)
    dropout_placement: str = setting("torchvision", choices=DROPOUT_PLACEMENTS)


@dataclass(frozen=True)
class SmallOptions(AlexNetOptions):
    """For 28x28 and 32x32 images: ten classes, He initialisation, narrower layers."""

    num_classes: int = setting(10, min=1, max=100_000)
    init: str = setting("kaiming", choices=INITS)
    widths: list[int] = setting([64, 128, 192, 192, 128], min=1, max=16_384)
    hidden: int = setting(1024, min=1, max=65_536)
    input_size: int = setting(32, min=8, max=4096)


def paper_alexnet(o: AlexNetOptions) -> AlexNet:
    return AlexNet(PAPER_TABLE, o, input_size=227)


def one_tower_alexnet(o: AlexNetOptions) -> AlexNet:
    return AlexNet(OWT_TABLE, o, input_size=None)


def small_alexnet(o: SmallOptions) -> AlexNet:  # type: ignore[override]
    if len(o.widths) != 5:
        raise UserError(f"widths: alexnet-small needs 5 conv widths, got {list(o.widths)}")
    return AlexNet(small_table(o.widths), o, hidden=o.hidden, input_size=o.input_size)


PAPER_NEURONS_CONV1 = 253_440  # section 5's count for the first layer, which 55x55x96 is not

NETWORKS = (
    Network(
        "alexnet", paper_alexnet, AlexNetOptions, 227,
        "the paper's network, two towers (Figure 2)", IMAGENET_MEAN, IMAGENET_STD,
        notes=(f"The paper gives {PAPER_NEURONS_CONV1:,} neurons for conv1; its 55x55x96 "
               "output is 290,400. The other figures match the paper.",
               "Input is 227x227: the paper's 224x224 cannot give conv1's 55x55 map."),
    ),
    Network(
        "alexnet-owt", one_tower_alexnet, OneTowerOptions, 224,
        "one tower in torchvision's layout: its published weights load unchanged",
        IMAGENET_MEAN, IMAGENET_STD,
    ),
    Network(
        "alexnet-small", small_alexnet, SmallOptions, 32,  # type: ignore[arg-type]
        "the same design for 28x28 and 32x32 images",
    ),
)  # fmt: skip

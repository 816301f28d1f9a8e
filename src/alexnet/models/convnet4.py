"""The four-layer CIFAR-10 network of Figure 1 (ReLU against tanh).

The paper gives no layer table for it; this follows cuda-convnet's CIFAR-10 network of the same
depth (32, 32 and 64 5x5 filters, each followed by 3x3/2 pooling, LRN after the pool). Figure 1
trains it with ReLU and with tanh without any regularisation, hence no LRN and no dropout by
default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alexnet.models import blocks
from alexnet.models.blocks import INITS, Conv
from alexnet.settings import setting

TABLE = (
    Conv(32, 5, padding=2, pool=1, norm=True),  # 32 -> 16
    Conv(32, 5, padding=2, towers=True, pool=1, norm=True),  # 16 -> 8
    Conv(64, 5, padding=2, towers=True, pool=1),  # 8 -> 4
)


@dataclass(frozen=True)
class ConvNet4Options(blocks.NetworkOptions):
    num_classes: int = setting(10, min=1, max=100_000)
    lrn: bool = setting(False)
    dropout: float = setting(0.0, min=0.0, below=1.0)
    two_towers: bool = setting(False)
    init: str = setting("kaiming", choices=INITS)
    input_size: int = setting(32, min=8, max=4096)


class ConvNet4(nn.Module):
    """Three conv layers with pooling, one fully connected layer."""

    def __init__(self, o: ConvNet4Options) -> None:
        super().__init__()
        self.features = blocks.feature_stack(TABLE, blocks.Blocks(o), pool_before_norm=True)
        side = blocks.map_size(TABLE, o.input_size, o.pooling)
        self.classifier = nn.Sequential(
            nn.Dropout(o.dropout), nn.Linear(TABLE[-1].width * side * side, o.num_classes)
        )
        blocks.initialise(self, o.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


NETWORK = blocks.Network(
    "convnet4", ConvNet4, ConvNet4Options, 32,  # type: ignore[arg-type]
    "the four-layer CIFAR-10 network of Figure 1 (ReLU against tanh)",
)  # fmt: skip

"""bench/winograd.py: the bound on Winograd's gain rests on finding the network's stride-1
convolutions and on giving each F(m, r) the products it would do; both checked here."""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import winograd


def test_finds_the_paper_networks_stride_one_convolutions_with_their_inputs():
    found = winograd.stride_one_convolutions(batch=3)
    kernels = [(conv.kernel_size[0], conv.groups, shape) for conv, shape in found.values()]
    # conv2 (5x5 on 27x27, two towers), conv3 (both towers' maps), conv4 and conv5 (two towers)
    assert kernels == [
        (5, 2, (3, 96, 27, 27)), (3, 1, (3, 256, 13, 13)),
        (3, 2, (3, 384, 13, 13)), (3, 2, (3, 384, 13, 13)),
    ]  # fmt: skip


def test_each_tile_size_does_its_share_of_the_direct_multiplications():
    """F(m, r) multiplies (m + r - 1)^2 times per m x m tile where the direct convolution
    multiplies m^2 r^2 times per tile: the products given to bmm hold exactly that."""
    conv = torch.nn.Conv2d(16, 24, 3, padding=1, groups=2)
    shape = (2, 16, 13, 13)
    cases = winograd.layer_cases(conv, shape)
    cases["direct"]()  # runs
    direct = 2 * 13 * 13 * 24 * (16 // 2) * 9  # multiply-adds of the layer
    for m in winograd.TILES:
        a, b = cases[f"F({m},3)"].__defaults__
        assert cases[f"F({m},3) traffic"]()[1].shape == (a.shape[0], a.shape[1], b.shape[2])
        assert a.shape[0] == b.shape[0] == 2 * (m + 2) ** 2 and a.shape[2] == b.shape[1] == 8
        products = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        padded = Fraction((math.ceil(13 / m) * m) ** 2, 13**2)  # the last tiles overhang
        assert Fraction(products, direct) == Fraction((m + 2) ** 2, m**2 * 9) * padded
        assert cases[f"F({m},3)"]().shape == (a.shape[0], a.shape[1], b.shape[2])

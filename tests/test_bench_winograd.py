"""bench/winograd.py: its figures rest on finding the network's convolutions, on giving each
F(m, r) the products it would do, and on NNPACK computing the same convolution; checked here."""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import winograd


def test_finds_the_paper_networks_convolutions_and_the_tiles_each_can_take():
    found = winograd.convolutions(batch=3)
    seen = [
        (c.kernel_size[0], c.stride[0], c.groups, s, winograd.tiles(c)) for c, s in found.values()
    ]
    assert seen == [
        (11, 4, 1, (3, 3, 227, 227), []),  # conv1: strided, no Winograd
        (5, 1, 2, (3, 96, 27, 27), [2, 3, 4]),  # conv2, two towers: tiles up to 8x8
        (3, 1, 1, (3, 256, 13, 13), [2, 3, 4, 5, 6]),  # conv3 sees both towers' maps
        (3, 1, 2, (3, 384, 13, 13), [2, 3, 4, 5, 6]),
        (3, 1, 2, (3, 384, 13, 13), [2, 3, 4, 5, 6]),
    ]


@pytest.mark.parametrize("m", [2, 4, 5])
def test_each_tile_size_does_its_share_of_the_direct_multiplications(m):
    """F(m, r) multiplies (m + r - 1)^2 times per m x m tile where the direct convolution
    multiplies m^2 r^2 times: the products given to bmm hold exactly that."""
    conv = torch.nn.Conv2d(16, 24, 3, padding=1, groups=2)
    shape = (2, 16, 13, 13)
    count, rows, inner, columns = winograd.products(conv, shape, m)
    assert (count, inner, columns) == (2 * (m + 2) ** 2, 8, 12)
    direct = winograd.direct_mult_adds(conv, shape)
    assert direct == 2 * 13 * 13 * 24 * 8 * 9
    overhang = Fraction((math.ceil(13 / m) * m) ** 2, 13**2)  # the last tiles reach past the edge
    assert (
        Fraction(count * rows * inner * columns, direct)
        == Fraction((m + 2) ** 2, m * m * 9) * overhang
    )


def test_every_case_runs_and_nnpack_computes_the_same_convolution():
    conv = torch.nn.Conv2d(16, 24, 3, padding=1, groups=2)
    cases = winograd.layer_cases(conv, (2, 16, 13, 13))
    expected = {"direct"} | {f"F({m}) products" for m in range(2, 7)}
    assert expected <= set(cases) and set(cases) - expected <= {"nnpack", "winograd"}
    for run in cases.values():
        run()
    if "nnpack" in cases:  # it checked itself against oneDNN when made; and it is that layer
        x = torch.randn(2, 16, 13, 13)
        with torch.inference_mode():
            towers = winograd.nnpack_case(conv, x)()
            assert torch.allclose(towers, conv(x), rtol=1e-3, atol=1e-4)

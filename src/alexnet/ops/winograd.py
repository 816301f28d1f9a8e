"""Winograd convolutions for inference in float32 on the CPU: fewer multiplications where the
arithmetic itself is the limit.

In float32 on a CPU without fast bfloat16 the paper's network answers at the speed of its
convolutions, which oneDNN already runs near the machine's peak. Winograd's F(m, r) computes
an m x m output tile of an r x r convolution with (m + r - 1)^2 multiplications where the
direct way needs m^2 r^2 (Lavin and Gray, 2016): the input's tiles are transformed (B^T d B),
multiplied point by point with the transformed weights (G g G^T) as (m + r - 1)^2 matrix
products over the channels, and transformed back (A^T M A). The products go to ``torch.bmm``;
the two transforms are a compiled kernel (csrc/winograd_cpu.cpp, which says why).

The tile is the one of at most 8 x 8 points (NNPACK's largest) that needs the fewest
multiplications for the layer's output: F(4, 5) for conv2 (0.17 of the direct multiplications)
and F(5, 3) for conv3 to conv5 (0.29). The paper's network answers 1.57x as fast at batch 64 on a
2-core Zen 4 held to AVX2 (bench/inference.py; the layers: bench/winograd.py), with outputs
within 2e-5 of the largest (the transforms' float32 rounding, tested against float64).

Only for a network that answers (the weights' transform is made once, from fixed weights),
only in float32, only on the CPU and only for layers with channels enough (SMALLEST_IN,
SMALLEST_OUT); ``ALEXNET_WINOGRAD=0`` switches it off, and a layer falls back to the direct
convolution for inputs too small to fill the products (SMALLEST_PRODUCTS).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import torch
from torch import nn

from alexnet.ops import native

LARGEST_TILE = 8  # points per side; beyond it float32 loses digits fast (points up to +-2, 1/2)
POINTS = (Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(1, 2),
          Fraction(-1, 2))  # fmt: skip
# Products of fewer rows (tiles) than this lose to oneDNN's direct convolution: on Zen 4 held
# to AVX2, one image's conv3 (9 tiles of F(5, 3)) took 1.7 ms against 1.5 directly, two
# images' (18 tiles) 2.1 against 2.8 ms; one image's conv2 (49 tiles of F(4, 5)) 1.0 against 2.5.
SMALLEST_PRODUCTS = 16
# Channels per tower, in and out, for the products to outweigh the transforms. Measured at
# batch 64 on Zen 4 held to AVX2, Winograd against direct (in, out, kernel, side): 48, 128, 5,
# 27 (the paper's conv2) 2.1x; 64, 96, 3, 7 1.27x; 64, 64, 3, 14 0.93x-1.16x; 48, 48, 3, 7
# 0.93x; 24, 64, 5, 27 1.0x; 16, 32, 5, 14 0.55x; 1, 32, 5, 28 (a first layer) 0.1x.
SMALLEST_IN, SMALLEST_OUT = 48, 96
CHUNK_BYTES = 128 << 20  # transformed tiles and products of one run of images


def _evaluation(points: int, degree: int) -> list[list[Fraction]]:
    """Rows [1, p, p^2, ...] of a polynomial of ``degree`` coefficients at the first
    ``points - 1`` of POINTS, and its leading coefficient (the point at infinity)."""
    rows = [[p**e for e in range(degree)] for p in POINTS[: points - 1]]
    return [*rows, [Fraction(0)] * (degree - 1) + [Fraction(1)]]


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse by Gauss-Jordan elimination over the rationals."""
    size = len(matrix)
    rows = [row + [Fraction(int(i == j)) for j in range(size)] for i, row in enumerate(matrix)]
    for col in range(size):
        pivot = next(i for i in range(col, size) if rows[i][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for i in range(size):
            if i != col and rows[i][col] != 0:
                rows[i] = [a - rows[i][col] * b for a, b in zip(rows[i], rows[col], strict=True)]
    return [row[size:] for row in rows]


@cache
def transforms(m: int, r: int) -> tuple[list[list[Fraction]], ...]:
    """Exact (A^T, G, B^T) of F(m, r), by Toom-Cook: a linear convolution of an m-tap and an
    r-tap signal is its values at n = m + r - 1 points, multiplied and interpolated back, and
    the correlation a convolution layer computes is that map transposed. With V_k the n x k
    evaluation matrix and C the inverse of V_n: A^T = V_m^T, G = V_r, B^T = C^T."""
    n = m + r - 1
    if n > len(POINTS) + 1:
        raise ValueError(f"F({m}, {r}) needs {n} points; at most {len(POINTS) + 1} are defined")
    vm, inverse = _evaluation(n, m), _inverse(_evaluation(n, n))
    a_t = [[vm[j][i] for j in range(n)] for i in range(m)]
    b_t = [[inverse[j][i] for j in range(n)] for i in range(n)]
    return a_t, _evaluation(n, r), b_t


def tile_for(r: int, out: int) -> int:
    """The output tile m of F(m, r) with the fewest multiplications for an out x out output,
    tiles of at most LARGEST_TILE points (ties: the smaller tile, the more accurate)."""
    sizes = range(2, LARGEST_TILE - r + 2)
    return min(sizes, key=lambda m: ((m + r - 1) ** 2 * math.ceil(out / m) ** 2, m))


def _tensor(rows: list[list[Fraction]], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=dtype)


class WinogradConv2d(nn.Conv2d):
    """An eligible ``nn.Conv2d`` (see :func:`eligible`) that answers by Winograd's F(m, r)
    (module docstring), with the same parameters and state dict; made with :meth:`of` from a
    trained layer. The tile follows the input's size, and the weights' transform for it is
    made on first use. Anything else takes the direct convolution: learning (any gradient
    wanted), types other than float32, autocast (it would take the products to its lower type),
    other devices, tracing, unbatched inputs, inputs of few tiles, or no compiled kernel."""

    @classmethod
    def of(cls, conv: nn.Conv2d) -> WinogradConv2d:
        """``conv``'s Winograd twin, sharing its parameters (hooks on ``conv`` stay with it)."""
        if not eligible(conv):
            raise ValueError(f"not a convolution Winograd's F(m, 3) or F(m, 5) computes: {conv}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                    groups=conv.groups, bias=conv.bias is not None, device="meta")  # fmt: skip
        layer.weight, layer.bias = conv.weight, conv.bias
        layer.train(conv.training)
        layer.transformed = {}
        return layer

    def _transformed(self, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(G w G^T per tower [groups, points, in, out], A^T, B^T) for F(m, r), made in float64
        and rounded once; made again only when the weights change: new memory (as a change of
        type makes) or a change in place (not one through ``.data``, which PyTorch does not
        count). The entry holds the weights it was made from, so that their memory cannot be
        handed to new weights at the same address meanwhile."""
        w = self.weight
        version = 0 if w.is_inference() else w._version  # inference tensors keep no count
        key = (m, w.data_ptr(), version)
        if self.transformed.get(m, (None,))[0] != key:
            r, groups = self.kernel_size[0], self.groups
            a_t, g, b_t = transforms(m, r)
            with torch.no_grad():
                gd = _tensor(g, torch.float64)
                u = torch.einsum("ai,ocij,bj->abco", gd, w.double(), gd)
                u = u.reshape((m + r - 1) ** 2, self.in_channels // groups, groups, -1)
                u = u.permute(2, 0, 1, 3).float().contiguous()
            self.transformed[m] = (key, w.detach(), u, _tensor(a_t), _tensor(b_t))
        return self.transformed[m][2:]

    def _direct(self, x: torch.Tensor) -> bool:
        wanted = torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for p in self.parameters()))  # fmt: skip
        return (wanted or x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu"
                or self.weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu")
                or torch.compiler.is_compiling() or not native.load("winograd_cpu"))  # fmt: skip

    def _output_size(self, x: torch.Tensor) -> tuple[int, int]:
        pad, r = self.padding[0], self.kernel_size[0]
        return x.shape[2] + 2 * pad - r + 1, x.shape[3] + 2 * pad - r + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._direct(x):
            return super().forward(x)
        out_h, out_w = self._output_size(x)
        m = tile_for(self.kernel_size[0], max(out_h, out_w))
        if x.shape[0] * math.ceil(out_h / m) * math.ceil(out_w / m) < SMALLEST_PRODUCTS:
            return super().forward(x)
        return self.convolve(x, m)

    def convolve(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """The layer on ``x`` (float32, CPU, batched) by F(m, r), in runs of images whose tiles'
        transforms and products fit in about CHUNK_BYTES (all at once, conv2 of 200 images
        needed 9x the direct convolution's memory)."""
        pad, r, groups = self.padding[0], self.kernel_size[0], self.groups
        out_h, out_w = self._output_size(x)
        tiles_h, tiles_w = math.ceil(out_h / m), math.ceil(out_w / m)
        u, a_t, b_t = self._transformed(m)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.empty((x.shape[0], self.out_channels, out_h, out_w), dtype=x.dtype,
                        memory_format=torch.channels_last)  # fmt: skip
        per_tower = self.out_channels // groups
        bias = self.bias if self.bias is not None else torch.zeros(self.out_channels)
        per_image = 4 * (m + r - 1) ** 2 * tiles_h * tiles_w * (self.in_channels + per_tower)
        run = max(1, CHUNK_BYTES // per_image)
        ops = torch.ops.alexnet_winograd
        for first in range(0, x.shape[0], run):
            v = ops.input_tiles(x[first : first + run], b_t, m, pad, groups, tiles_h, tiles_w)
            products = None
            for g in range(groups):  # [points, tiles, out] by MKL's batched GEMM, one buffer
                products = torch.bmm(v[g], u[g], out=products)
                tower_bias = bias[g * per_tower : (g + 1) * per_tower]
                ops.output_tiles(products, a_t, tower_bias, y[first : first + run], tiles_h,
                                 tiles_w, g * per_tower)  # fmt: skip
        return y


def eligible(conv: nn.Module) -> bool:
    """A layer Winograd's F(m, 3) and F(m, 5) compute: square 3x3 or 5x5, stride and dilation
    1, zero padding."""
    return (type(conv) is nn.Conv2d and conv.kernel_size in ((3, 3), (5, 5))
            and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1])  # fmt: skip


def pays(conv: nn.Conv2d) -> bool:
    """Whether the layer has channels enough per tower for Winograd to beat the direct
    convolution (SMALLEST_IN, SMALLEST_OUT): conv2 to conv5 of the paper's network do."""
    return (conv.in_channels // conv.groups >= SMALLEST_IN
            and conv.out_channels // conv.groups >= SMALLEST_OUT)  # fmt: skip


def enabled() -> bool:
    """Whether Winograd's convolutions may be used here: not switched off by
    ``ALEXNET_WINOGRAD`` (0, false, no, off) and the compiled kernel loads."""
    return native.switched_on("ALEXNET_WINOGRAD") and native.load("winograd_cpu")


def use_winograd(model: nn.Module) -> int:
    """Every eligible convolution of ``model`` replaced by its Winograd twin, in place;
    returns how many were."""
    names = [name for name, module in model.named_modules() if eligible(module) and pays(module)]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, child, WinogradConv2d.of(getattr(owner, child)))
    return len(names)

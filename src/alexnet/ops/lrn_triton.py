"""LRN on the GPU as Triton kernels: one launch forward, two backward, whatever the batch.

The PyTorch path of lrn.py loops over cache-sized blocks, which on CUDA would launch tens of
thousands of small kernels per step at batch 512. Here one program takes one sample's
``BLOCK_S`` positions across all of its channels (a tile of at most a few thousand values),
squares them, sums each channel's window by reading its neighbours again (they are in the
cache), and writes the output: the data crosses memory once per direction. Backward first
writes ``t = g x s / d`` (float32), then sums ``t`` over the mirrored window:
``dx = g s - 2 alpha beta x window(t)``.

Both layouts take the same kernels: an element's offset is ``n * C * S + c * cs + p * ps``
with (cs, ps) = (S, 1) for NCHW and (1, C) for channels_last. Computation is in float32 and
rounds once on the store. Tested on the CPU with Triton's interpreter (TRITON_INTERPRET=1)
against the reference path; the compiled kernels need a CUDA GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _window(x_ptr, base, c, p, C, cs, ps, mask_p, SIZE: tl.constexpr, LOW: tl.constexpr,
            SQUARE: tl.constexpr, RELU: tl.constexpr, BLOCK_C: tl.constexpr,
            BLOCK_S: tl.constexpr):  # fmt: skip
    """Sum over channels c - LOW .. c - LOW + SIZE - 1 of x (squared when SQUARE)."""
    acc = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    for m in tl.static_range(SIZE):
        cc = c + (m - LOW)
        mask = (cc >= 0) & (cc < C) & mask_p
        v = tl.load(x_ptr + base + cc * cs + p * ps, mask=mask, other=0.0).to(tl.float32)
        if RELU:
            v = tl.where(v < 0.0, 0.0, v)
        acc += v * v if SQUARE else v
    return acc


@triton.jit
def _tile(C, S, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """This program's positions p (a row) and channels c (a column) of sample n, the sample's
    offset, and the masks of positions and of elements inside the tensor."""
    n = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)[None, :]
    c = tl.arange(0, BLOCK_C)[:, None]
    mask_p = p < S
    return p, c, n.to(tl.int64) * C * S, mask_p, (c < C) & mask_p


@triton.jit
def _scale(d, beta, BETA_075: tl.constexpr):
    """d ** -beta; the paper's 0.75 as r * r / sqrt(r) with r = 1 / sqrt(d), which stays
    finite where d * sqrt(d) would overflow."""
    if BETA_075:
        r = 1.0 / tl.sqrt(d)
        return r * r / tl.sqrt(r)
    return tl.exp(-beta * tl.log(d))


@triton.jit
def _forward_kernel(x_ptr, y_ptr, C, S, cs, ps, alpha, beta, k, SIZE: tl.constexpr,
                    BEFORE: tl.constexpr, BETA_075: tl.constexpr, RELU: tl.constexpr, BLOCK_C: tl.constexpr,
                    BLOCK_S: tl.constexpr):  # fmt: skip
    p, c, base, mask_p, mask = _tile(C, S, BLOCK_C, BLOCK_S)
    d = k + alpha * _window(
        x_ptr, base, c, p, C, cs, ps, mask_p, SIZE, BEFORE, True, RELU, BLOCK_C, BLOCK_S
    )
    x = tl.load(x_ptr + base + c * cs + p * ps, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        x = tl.where(x < 0.0, 0.0, x)
    y = x * _scale(d, beta, BETA_075)
    tl.store(y_ptr + base + c * cs + p * ps, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_t_kernel(x_ptr, g_ptr, t_ptr, C, S, cs, ps, alpha, beta, k, SIZE: tl.constexpr,
                       BEFORE: tl.constexpr, BETA_075: tl.constexpr, RELU: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_S: tl.constexpr):  # fmt: skip
    p, c, base, mask_p, mask = _tile(C, S, BLOCK_C, BLOCK_S)
    d = k + alpha * _window(
        x_ptr, base, c, p, C, cs, ps, mask_p, SIZE, BEFORE, True, RELU, BLOCK_C, BLOCK_S
    )
    at = base + c * cs + p * ps
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        x = tl.where(x < 0.0, 0.0, x)
    g = tl.load(g_ptr + at, mask=mask, other=0.0).to(tl.float32)
    tl.store(t_ptr + at, g * x * _scale(d, beta, BETA_075) / d, mask=mask)


@triton.jit
def _backward_dx_kernel(x_ptr, g_ptr, t_ptr, dx_ptr, C, S, cs, ps, alpha, beta, k,
                        SIZE: tl.constexpr, BEFORE: tl.constexpr, AFTER: tl.constexpr,
                        BETA_075: tl.constexpr, RELU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):  # fmt: skip
    p, c, base, mask_p, mask = _tile(C, S, BLOCK_C, BLOCK_S)
    d = k + alpha * _window(
        x_ptr, base, c, p, C, cs, ps, mask_p, SIZE, BEFORE, True, RELU, BLOCK_C, BLOCK_S
    )
    back = _window(
        t_ptr, base, c, p, C, cs, ps, mask_p, SIZE, AFTER, False, False, BLOCK_C, BLOCK_S
    )
    at = base + c * cs + p * ps
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + at, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        x = tl.where(x < 0.0, 0.0, x)
    dx = g * _scale(d, beta, BETA_075) - 2.0 * alpha * beta * x * back
    if RELU:
        dx = tl.where(x <= 0.0, 0.0, dx)
    tl.store(dx_ptr + at, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _layout(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int, int]:
    """(x in a layout the kernels read, C, S, channel stride, position stride)."""
    channels = x.shape[1]
    spatial = x[0, 0].numel() if x.numel() else 0
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x, channels, spatial, 1, channels
    x = x.contiguous()
    return x, channels, spatial, spatial, 1


def _grid(x: torch.Tensor, channels: int, spatial: int) -> tuple[tuple[int, int], dict]:
    block_c = triton.next_power_of_2(max(channels, 1))
    block_s = max(1, min(triton.next_power_of_2(max(spatial, 1)), 4096 // block_c))
    return (x.shape[0], triton.cdiv(spatial, block_s)), {"BLOCK_C": block_c, "BLOCK_S": block_s}


def forward(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, relu: bool = False
) -> torch.Tensor:
    x, channels, spatial, cs, ps = _layout(x)
    y = torch.empty_like(x)
    if x.numel():
        grid, blocks = _grid(x, channels, spatial)
        _forward_kernel[grid](x, y, channels, spatial, cs, ps, alpha, beta, k, SIZE=size,
                              BEFORE=size // 2, BETA_075=beta == 0.75, RELU=relu, **blocks)  # fmt: skip
    return y


def backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    relu: bool = False,
) -> torch.Tensor:
    x, channels, spatial, cs, ps = _layout(x)
    grad = grad.contiguous(
        memory_format=torch.channels_last if ps != 1 else torch.contiguous_format
    )
    dx = torch.empty_like(x)
    if x.numel():
        t = torch.empty_like(x, dtype=torch.float32)
        grid, blocks = _grid(x, channels, spatial)
        common = {"SIZE": size, "BEFORE": size // 2, "BETA_075": beta == 0.75, "RELU": relu,
                  **blocks}  # fmt: skip
        _backward_t_kernel[grid](x, grad, t, channels, spatial, cs, ps, alpha, beta, k, **common)
        _backward_dx_kernel[grid](x, grad, t, dx, channels, spatial, cs, ps, alpha, beta, k,
                                  AFTER=(size - 1) // 2, **common)  # fmt: skip
    return dx

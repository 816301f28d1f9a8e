"""Local response normalisation (section 3.3 of the paper), fast on the CPU.

The paper normalises each activation by its neighbours across channels:

    b[c] = a[c] / (k + alpha * sum_{j in window(c)} a[j]^2) ** beta

with k=2, n=5, alpha=1e-4, beta=0.75. Two conventions for alpha exist:

* ``formula="paper"``: the formula as printed in the paper, alpha multiplies the plain sum.
* ``formula="torch"``: alpha is divided by the window size n, as in
  ``torch.nn.LocalResponseNorm``, Caffe and cuda-convnet (the code the paper was run with).
  With the paper's alpha=1e-4 this makes the normalisation n times weaker.

Why not ``torch.nn.LocalResponseNorm``: on the CPU it squares, pads, runs ``avg_pool3d`` and a
generic ``pow`` and lets autograd keep every intermediate, which takes about two thirds of a
small AlexNet's training step. Here the channel window is a handful of shifted in-place adds,
``d ** -0.75`` is ``rsqrt(d * sqrt(d))`` instead of ``exp(-0.75 * log(d))``, and the backward
pass is written by hand (one more window sum) instead of being recorded op by op.
``bench/lrn.py`` measures the gain against ``torch.nn.LocalResponseNorm``.

Reduced-precision inputs (bfloat16, float16) are computed in float32 and rounded once at the end,
so the result is the correctly rounded value of the float32 computation.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
from torch import nn

from alexnet.errors import UserError
from alexnet.ops import native

Formula = Literal["torch", "paper"]
Implementation = Literal["auto", "torch", "native", "triton"]
FORMULAS: tuple[str, ...] = ("torch", "paper")


# Elements per block (1 MiB of float32): every intermediate of one block stays in the L2/L3 cache,
# so the dozen elementwise passes below cost cache bandwidth instead of memory bandwidth. Measured
# on a 2-core Zen 3 for 128x96x55x55 float32 forward+backward: whole-tensor passes 1.2 s, blocks
# of one sample about half that (bench/lrn.py has the current figure).
_BLOCK_ELEMENTS = 1 << 18


def _blocks(x: torch.Tensor) -> list[tuple[slice, ...]]:
    """Index tuples cutting ``x`` into pieces of about ``_BLOCK_ELEMENTS`` elements.

    The window runs over channels only, so a block may cut the batch and, inside one large
    sample, the first spatial dimension; it always keeps every channel.
    """
    n = x.shape[0]
    per_sample = max(1, x[0].numel())
    if per_sample <= _BLOCK_ELEMENTS:
        step = max(1, _BLOCK_ELEMENTS // per_sample)
        return [(slice(i, i + step),) for i in range(0, n, step)]
    rows = x.shape[2]
    per_row = max(1, per_sample // rows)
    row_step = max(1, _BLOCK_ELEMENTS // per_row)
    return [
        (slice(i, i + 1), slice(None), slice(r, r + row_step))
        for i in range(n)
        for r in range(0, rows, row_step)
    ]


def _window_sum_into(out: torch.Tensor, t: torch.Tensor, before: int, after: int) -> None:
    """``out[c] = sum of t over channels c - before .. c + after`` (dim 1), zero outside."""
    # .add_ on a view, not `view += ...`: Python's augmented assignment on a subscript writes the
    # result back through __setitem__, a full extra copy per shift.
    out.copy_(t)
    channels = t.shape[1]
    for shift in range(1, min(before, channels - 1) + 1):
        out[:, shift:].add_(t[:, : channels - shift])
    for shift in range(1, min(after, channels - 1) + 1):
        out[:, : channels - shift].add_(t[:, shift:])


def _inverse_power(d: torch.Tensor, beta: float) -> torch.Tensor:
    """``d ** -beta``, through square roots for the exponents people actually use."""
    if beta == 0.75:
        # The paper's value. d^-3/4 = r * (d * r)^-1/2 with r = d^-1/2: two rsqrt and two
        # multiplies, which measured 6x faster than torch.pow(d, -0.75) and 1.5x faster than
        # going through torch.sqrt, whose vector kernel is the slower instruction.
        r = torch.rsqrt(d)
        return torch.rsqrt(d * r).mul_(r)
    if beta == 0.5:
        return torch.rsqrt(d)
    if beta == 1.0:
        return torch.reciprocal(d)
    return torch.pow(d, -beta)


def _denominator(xb: torch.Tensor, size: int, alpha: float, k: float) -> torch.Tensor:
    """``k + alpha * window_sum(x^2)`` for one block (torch's window: size//2 before)."""
    sq = xb * xb
    d = torch.empty_like(sq)
    _window_sum_into(d, sq, size // 2, (size - 1) // 2)
    return d.mul_(alpha).add_(k)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Reduced precision computes in float32; float32 and float64 stay as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _block_input(x: torch.Tensor, block: tuple[slice, ...], relu: bool) -> torch.Tensor:
    """One block of the input, widened, with the fused ReLU applied where there is one."""
    xb = _wide(x[block])
    return torch.relu(xb) if relu else xb


def _torch_forward(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, relu: bool = False
) -> torch.Tensor:
    y = torch.empty_like(x)
    for block in _blocks(x):
        xb = _block_input(x, block, relu)
        d = _denominator(xb, size, alpha, k)
        y[block] = xb * _inverse_power(d, beta)
    return y


def _torch_backward(grad: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float,
                    k: float, relu: bool = False) -> torch.Tensor:  # fmt: skip
    grad_x = torch.empty_like(x)
    for block in _blocks(x):
        xb = _block_input(x, block, relu)
        g = _wide(grad[block])
        d = _denominator(xb, size, alpha, k)
        scale = _inverse_power(d, beta)
        # dy[c]/dx[j] = scale[c] [c == j] - 2 alpha beta x[c] x[j] scale[c] / d[c] for j in
        # window(c); summing over c is a sum over the mirrored window (after, before).
        t = g * xb
        t.mul_(scale).div_(d)
        back = torch.empty_like(t)
        _window_sum_into(back, t, (size - 1) // 2, size // 2)
        back.mul_(xb).mul_(-2.0 * alpha * beta)
        back.addcmul_(g, scale)
        if relu:  # ReLU's gradient, as torch's: none where the input was <= 0 (NaN passes)
            back.masked_fill_(xb <= 0, 0.0)
        grad_x[block] = back
    return grad_x


def _native_forward(x: torch.Tensor, *params) -> torch.Tensor:
    return torch.ops.alexnet_lrn.forward(x, *params)


def _native_backward(grad: torch.Tensor, x: torch.Tensor, *params) -> torch.Tensor:
    return torch.ops.alexnet_lrn.backward(grad, x, *params)


# The Triton kernels as operators of their own: to torch.compile they are opaque calls with a
# known output (registered below), where a traced Python launch of a user kernel would be
# followed into lrn_triton.py and split or re-specialised with each shape.
@torch.library.custom_op("alexnet_lrn_triton::forward", mutates_args=())
def _triton_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                    relu: bool) -> torch.Tensor:  # fmt: skip
    from alexnet.ops import lrn_triton

    return lrn_triton.forward(x, size, alpha, beta, k, relu)


@torch.library.custom_op("alexnet_lrn_triton::backward", mutates_args=())
def _triton_backward(grad: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float,
                     k: float, relu: bool) -> torch.Tensor:  # fmt: skip
    from alexnet.ops import lrn_triton

    return lrn_triton.backward(grad, x, size, alpha, beta, k, relu)


IMPLEMENTATIONS = {
    "torch": (_torch_forward, _torch_backward),
    "native": (_native_forward, _native_backward),
    "triton": (_triton_forward, _triton_backward),  # the GPU's: lrn_triton.py
}


@functools.cache
def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _fake(x: torch.Tensor, *_params) -> torch.Tensor:
    """The shape and strides the native ops return, for tracing (torch.compile, export): a
    channels-last input's own strides, else contiguous (as ``prepare`` in lrn_cpu.cpp)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.empty_like(x)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fake_backward(grad: torch.Tensor, x: torch.Tensor, *_params) -> torch.Tensor:
    return _fake(x)


_triton_forward.register_fake(_fake)
_triton_backward.register_fake(_fake_backward)


def _native_available() -> bool:
    if not native.load("lrn_cpu"):
        return False
    if not getattr(_native_available, "registered", False):
        torch.library.register_fake("alexnet_lrn::forward", _fake)
        torch.library.register_fake("alexnet_lrn::backward", _fake_backward)
        _native_available.registered = True  # type: ignore[attr-defined]
    return True


# Decided outside any compiled graph: building or loading a library is no graph operation.
@torch.compiler.disable
def _choose(device_type: str, dtype: torch.dtype, requested: str) -> str:
    if requested == "native" and not _native_available():
        raise RuntimeError("the native LRN kernel is not available here (see the warning above)")
    if requested != "auto":
        return requested
    if device_type == "cuda" and dtype != torch.float64 and _has_triton():
        return "triton"
    native_ok = device_type == "cpu" and dtype in (torch.float32, torch.bfloat16, torch.float16)
    return "native" if native_ok and _native_available() else "torch"


_CHOSEN: dict[tuple[str, torch.dtype, str], str] = {}


def pick_implementation(x: torch.Tensor, requested: Implementation = "auto") -> str:
    """The compiled kernel for CPU tensors of float32, bfloat16 and float16 where it builds, the
    Triton kernels for CUDA tensors where Triton is installed; the PyTorch path elsewhere
    (float64, other devices, no compiler) and as the reference.

    Remembered per (device, dtype): under ``torch.compile`` a remembered choice is a constant
    of the graph, where calling the choosing function (compiler-disabled) would break the graph
    in two at every LRN. ``choose_ahead`` makes the choices before a network is compiled."""
    key = (x.device.type, x.dtype, requested)
    if key not in _CHOSEN:
        _CHOSEN[key] = _choose(*key)
    return _CHOSEN[key]


def choose_ahead(device: torch.device, dtypes: tuple[torch.dtype, ...]) -> None:
    """Make the automatic choice for these inputs now, outside any compiled graph."""
    for dtype in dtypes:
        pick_implementation(torch.empty(0, device=device, dtype=dtype))


class _LRNFunction(torch.autograd.Function):
    """Only the input is saved: the denominator is recomputed in backward, which costs less
    than writing it to memory and reading it back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float, relu: bool,
                impl: str):  # fmt: skip
        ctx.save_for_backward(x)
        ctx.params = (size, alpha, beta, k, relu)
        ctx.impl = impl
        return IMPLEMENTATIONS[impl][0](x, size, alpha, beta, k, relu)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x = IMPLEMENTATIONS[ctx.impl][1](grad, x, *ctx.params)
        return grad_x, None, None, None, None, None, None


def paper_alpha(alpha: float, size: int, formula: Formula) -> float:
    """The alpha that multiplies the window's sum of squares (the paper's own): torch, ONNX,
    Caffe and cuda-convnet give alpha for the window's mean instead, alpha / size of it. The
    one place the two conventions meet; :attr:`LocalResponseNorm.torch_alpha` goes back."""
    return alpha / size if formula == "torch" else alpha


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0, formula: Formula = "torch",
                        implementation: Implementation = "auto",
                        relu: bool = False) -> torch.Tensor:  # fmt: skip
    """Functional form of :class:`LocalResponseNorm`; input is (N, C, ...) of any memory format.
    ``implementation`` "auto" picks the compiled kernel where it applies (see
    :func:`pick_implementation`); the others force one. ``relu``: apply ReLU to ``x`` first,
    inside the same pass (see :class:`LocalResponseNorm`)."""
    if x.dim() < 3:
        raise ValueError(
            f"local_response_norm expects (N, C, ...) with at least 3 dims, got shape {tuple(x.shape)}"
        )
    if formula not in FORMULAS:
        raise UserError(f"unknown LRN formula {formula!r}; valid: {', '.join(FORMULAS)}")
    effective_alpha = paper_alpha(alpha, size, formula)
    if implementation not in ("auto", *IMPLEMENTATIONS):
        raise UserError(f"unknown LRN implementation {implementation!r}; valid: auto, "
                         f"{', '.join(IMPLEMENTATIONS)}")  # fmt: skip
    impl = pick_implementation(x, implementation)
    return _LRNFunction.apply(x, size, effective_alpha, beta, k, relu, impl)


class LocalResponseNorm(nn.Module):
    """Drop-in, faster replacement for ``torch.nn.LocalResponseNorm``.

    Defaults follow torch (k=1, ``formula="torch"``, alpha divided by n); the paper's layer is
    ``LocalResponseNorm(5, 1e-4, 0.75, 2.0, formula="paper")``, which the networks use.

    ``relu=True`` applies ReLU to the input first, in the same pass: the paper's order is conv,
    ReLU, LRN, and a separate ReLU reads and writes the whole map once more forward and three
    times more backward. The networks fuse it this way and keep a :class:`ReLUInLRN` marker in
    the ReLU's place, so layer indices (and checkpoints) stay as they were.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                 formula: Formula = "torch", implementation: Implementation = "auto",
                 relu: bool = False) -> None:  # fmt: skip
        super().__init__()
        if size < 1:
            raise UserError(f"LRN size must be >= 1, got {size}")
        if formula not in FORMULAS:
            raise UserError(f"unknown LRN formula {formula!r}; valid: {', '.join(FORMULAS)}")
        self.size, self.alpha, self.beta, self.k, self.formula = size, alpha, beta, k, formula
        self.implementation, self.relu = implementation, relu

    @property
    def torch_alpha(self) -> float:
        """This layer's alpha in torch's (and ONNX's) convention: for the window's mean."""
        return paper_alpha(self.alpha, self.size, self.formula) * self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(
            x, self.size, self.alpha, self.beta, self.k, self.formula, self.implementation,
            self.relu,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"formula={self.formula!r}" + (", relu=True" if self.relu else "")
        )


class ReLUInLRN(nn.Identity):
    """Where the ReLU before an LRN stands; the LRN that follows applies it (``relu=True``)."""

    def extra_repr(self) -> str:
        return "applied by the next LocalResponseNorm"

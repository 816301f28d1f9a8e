"""LRN as the exporters see it: the same values as :class:`~alexnet.ops.lrn.LocalResponseNorm`,
as one ``alexnet::lrn`` operator that the ONNX exporter turns into ONNX's ``LRN``, or in plain
PyTorch arithmetic (``.pt2`` programs, and ONNX for even window sizes, which ONNX's LRN centres
differently). Neither ONNX nor a saved program knows the package's compiled kernels
(lrn_cpu.cpp, lrn_triton.py); ``alexnet export`` swaps them out while it traces
(:func:`exportable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.ops.lrn import LocalResponseNorm


def lrn_math(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
             relu: bool) -> torch.Tensor:  # fmt: skip
    """LRN in plain PyTorch operations, with ONNX's (and torch's) alpha: divided by ``size``.
    ``torch.nn.functional.local_response_norm`` is exactly that (its window: ``size // 2``
    channels before, ``(size - 1) // 2`` after), made of padding, pooling and powers that every
    exporter knows; its slowness on the CPU (lrn.py) does not matter to a traced graph."""
    return F.local_response_norm(torch.relu(x) if relu else x, size, alpha, beta, k)


@torch.library.custom_op("alexnet::lrn", mutates_args=())
def _lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
            relu: bool) -> torch.Tensor:  # fmt: skip
    """ONNX's LRN as one operator, which the ONNX exporter translates into ``LRN``."""
    return lrn_math(x, size, alpha, beta, k, relu)


@_lrn_op.register_fake
def _lrn_op_shape(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                  relu: bool) -> torch.Tensor:  # fmt: skip
    return torch.empty_like(x)


class ExportLRN(nn.Module):
    """A :class:`LocalResponseNorm` as the exporters see it: the same values, computed by the
    ``alexnet::lrn`` operator (``onnx``, odd sizes) or by :func:`lrn_math`."""

    def __init__(self, m: LocalResponseNorm, onnx: bool) -> None:
        super().__init__()
        self.params = (m.size, m.torch_alpha, m.beta, m.k, m.relu)  # ONNX's alpha is torch's
        self.as_operator = onnx and m.size % 2 == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.as_operator:
            return torch.ops.alexnet.lrn(x, *self.params)
        return lrn_math(x, *self.params)


@contextlib.contextmanager
def exportable(model: nn.Module, onnx: bool) -> Iterator[nn.Module]:
    """``model`` with each LocalResponseNorm replaced by an :class:`ExportLRN`, put back after."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, LocalResponseNorm):
                swapped.append((parent, name, child))
                setattr(parent, name, ExportLRN(child, onnx))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _onnx_translations() -> dict[Callable, Callable]:
    from onnxscript import opset18 as op

    def lrn(x, size: int, alpha: float, beta: float, k: float, relu: bool):
        if relu:
            x = op.Relu(x)
        return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)

    return {torch.ops.alexnet.lrn.default: lrn}

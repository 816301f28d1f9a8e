"""A trained network made ready to answer: evaluation mode, no autograd, the layout and the
precision the hardware computes fastest in, with the weights converted once.

Under autocast every call casts each weight to bfloat16 again (61 million of them for the
paper's network, about as long as the convolutions themselves at batch 1); a network that
only answers keeps its weights in bfloat16 instead. In float32 on the CPU its 3x3 and 5x5
convolutions go by Winograd's algorithm (winograd.py). ``bench/inference.py`` measures it.
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet.ops import winograd
from alexnet.runtime import autocast, tune_cudnn


def prepare_for_inference(
    model: nn.Module, device: torch.device, amp: torch.dtype | None, channels_last: bool
) -> nn.Module:
    """``model`` in evaluation mode on ``device``, its weights in ``amp`` (float32 when unset,
    also for a network prepared before in another type) and in the channels-last layout (when
    asked); changed in place and returned."""
    model.eval().requires_grad_(False).to(device)
    if device.type == "cuda":
        tune_cudnn()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.to(amp or torch.float32)
    if device.type == "cpu" and amp is None and winograd.enabled():
        # Fewer multiplications for conv2-conv5: 1.57x the paper's network at batch 64 on
        # Zen 4 held to AVX2, 1.29x-1.36x held to AVX-512 (bench/inference.py).
        winograd.use_winograd(model)
    return model


@torch.inference_mode()
def infer(model: nn.Module, x: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    """Float32 logits of a batch from a prepared network."""
    with autocast(x.device, amp):
        return model(x).float()

"""What training a network will take in memory, estimated before any of it is allocated.

The network is built on PyTorch's meta device, which keeps shapes and no data, and one image
is run through it: every layer's output size and every parameter, for no memory and in
moments whatever the size asked (``--set data.image_size=100000`` asked for 38.9 GB and
died with a traceback). The estimate is checked against the free memory of the device that
will train (a GPU's own, else the machine's, shared by every process of a run on it).
Training keeps about four copies of the parameters (weights,
gradients, momentum, and bfloat16 autocast's float copies) and, per image of a batch, every
layer's output for the backward pass and as much again for its gradients.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from alexnet.models import build_model


def on_meta(arch: str, options: dict) -> nn.Module:
    """Registered network ``arch`` on the meta device: shapes only."""
    with torch.device("meta"):
        return build_model(arch, **options).eval()


def activation_bytes(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """The float32 bytes of every leaf layer's output for one image of ``shape``; a shape
    the network cannot take raises its own error."""
    total = [0]
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, out: total.__setitem__(0, total[0] + out.numel()))
             for m in leaves]  # fmt: skip
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return 4 * total[0]


def training_bytes(model: nn.Module, shape: tuple[int, int, int], batch: int) -> int:
    params = sum(p.numel() for p in model.parameters())
    return 4 * 4 * params + 2 * batch * activation_bytes(model, shape)


def free_bytes(device: torch.device) -> int:
    """What ``device`` could give a run now: a GPU's free memory, else the system's
    MemAvailable; -1 if unknown (nothing is refused on a guess)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError, ValueError):
            return -1
    return available_bytes()


def where(device: torch.device) -> str:
    """The memory a refusal speaks of, in words."""
    if device.type == "cuda":
        try:
            return f"this GPU ({torch.cuda.get_device_name(device)}) has"
        except (RuntimeError, AssertionError):
            return "this GPU has"
    return "this machine has"


def available_bytes() -> int:
    """The memory the system could give a new process now (MemAvailable), or -1 if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return -1

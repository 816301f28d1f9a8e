"""Layer-by-layer table of a network: output shape, neurons, parameters and multiply-adds.

The paper counts "neurons" as the outputs of the weighted layers (section 3.5: "the number of
neurons in the network's remaining layers is given by 253,440-186,624-64,896-64,896-43,264-
4096-4096-1000"). 253,440 does not match conv1's 55x55x96 = 290,400 outputs; the table prints
the computed figure and the notes say so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from alexnet.errors import UserError
from alexnet.models import network
from alexnet.models.memory import on_meta

MAX_SIDE, MAX_CHANNELS = 4096, 64  # one image of this size runs through a network in memory
SHORT_NAMES = {
    "Conv2d": "conv",
    "Linear": "fc",
    "LocalResponseNorm": "lrn",
    "MaxPool2d": "pool",
    "AdaptiveAvgPool2d": "avgpool",
}


@dataclass
class LayerRow:
    name: str
    kind: str
    output: list[int]
    neurons: int  # outputs of weighted layers only, as the paper counts them
    params: int
    mult_adds: int


def parse_input(text: str) -> tuple[int, int, int]:
    """'3x227x227' -> (3, 227, 227)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise UserError(
            f"--input must look like 3x227x227 (channels x height x width), got {text!r}"
        )
    if dims[0] > MAX_CHANNELS or max(dims[1:]) > MAX_SIDE:
        raise UserError(
            f"--input {text}: at most {MAX_CHANNELS} channels and {MAX_SIDE} pixels a side"
        )
    return dims  # type: ignore[return-value]


def _mult_adds(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def layer_table(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Run one image through ``model`` and record every leaf layer."""
    rows: list[LayerRow] = []
    weighted = 0
    hooks = []

    def hook(module: nn.Module, _inputs, out: torch.Tensor) -> None:
        nonlocal weighted
        if type(module) is nn.Identity:  # an empty slot: no dropout before fc6 in the paper's order
            return
        is_weighted = isinstance(module, (nn.Conv2d, nn.Linear))
        if is_weighted:
            weighted += 1
        kind = type(module).__name__
        prefix = SHORT_NAMES.get(kind, kind.lower())
        # Every other layer is named after the weighted layer whose outputs it takes, as Caffe
        # names them: dropout6 drops fc6's outputs (the paper's placement); torchvision's
        # order has dropout5 (pool5's outputs) and dropout6 instead.
        rows.append(
            LayerRow(
                name=f"{prefix}{weighted}",
                kind=kind,
                output=list(out.shape[1:]),
                neurons=out[0].numel() if is_weighted else 0,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                mult_adds=_mult_adds(module, out[:1]),
            )
        )

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return rows


def summarise(arch: str, input_shape: tuple[int, int, int] | None = None, **options) -> dict:
    """Build ``arch`` for ``input_shape`` and return its table, totals and notes."""
    info = network(arch)
    shape = input_shape or (3, info.input_size, info.input_size)
    if options.setdefault("in_channels", shape[0]) != shape[0]:
        raise UserError(
            f"-o in_channels={options['in_channels']} but --input has {shape[0]} channels"
        )
    if info.sized_by_option:
        options.setdefault("input_size", shape[1])
    model = on_meta(arch, options)  # shapes and counts only: any size at once, no memory
    try:
        rows = layer_table(model, shape)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"{arch} cannot take a {'x'.join(map(str, shape))} input: {first}"
        ) from None
    notes = list(network(arch).notes)
    return {
        "arch": arch,
        "input": list(shape),
        "layers": [asdict(r) for r in rows],
        "total_params": sum(p.numel() for p in model.parameters()),
        "total_neurons": sum(r.neurons for r in rows),
        "total_mult_adds": sum(r.mult_adds for r in rows),
        "notes": notes,
    }


def format_table(summary: dict) -> str:
    header = f"{'layer':10s} {'type':18s} {'output':>16s} {'neurons':>12s} {'params':>12s} {'mult-adds':>15s}"
    lines = [
        f"{summary['arch']}, input {'x'.join(map(str, summary['input']))}",
        header,
        "-" * len(header),
    ]
    for r in summary["layers"]:
        neurons = f"{r['neurons']:,}" if r["neurons"] else ""
        params = f"{r['params']:,}" if r["params"] else ""
        macs = f"{r['mult_adds']:,}" if r["mult_adds"] else ""
        out = "x".join(map(str, r["output"]))
        lines.append(
            f"{r['name']:10s} {r['kind']:18s} {out:>16s} {neurons:>12s} {params:>12s} {macs:>15s}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':10s} {'':18s} {'':>16s} {summary['total_neurons']:>12,} "
        f"{summary['total_params']:>12,} {summary['total_mult_adds']:>15,}"
    )
    lines += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)


def to_json(summary: dict) -> str:
    return json.dumps(summary, indent=2)

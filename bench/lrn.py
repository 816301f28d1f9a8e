"""Forward+backward time of alexnet.ops.lrn.LocalResponseNorm against torch.nn.LocalResponseNorm.

Shapes are the paper's: conv1's output (128x96x55x55) and conv2's (128x256x27x27), batch 128,
in float32 and bfloat16, NCHW and channels_last. torch's CPU LocalResponseNorm has no bfloat16
kernel (avg_pool3d refuses it), so its bfloat16 baseline is what a user must write instead:
compute in float32 and cast back.

    python bench/lrn.py [--rounds 5] [--isa avx2]

Three columns: torch.nn.LocalResponseNorm, this package's PyTorch path (the reference) and its
compiled kernel (native.py); one line per case, written to bench/results/lrn-<cpu kind>.json.
"""

from __future__ import annotations

import argparse

import torch
from machine import describe, interleaved, machine, parse_held, write

from alexnet.ops.lrn import LocalResponseNorm

PAPER = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
SHAPES = {"conv1": (128, 96, 55, 55), "conv2": (128, 256, 27, 27)}


def torch_reference(module: torch.nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16:
            return module(x.float()).to(torch.bfloat16)
        return module(x)

    return run


def forward_backward(fn, x: torch.Tensor, grad: torch.Tensor):
    def call() -> None:
        fn(x.detach().requires_grad_()).backward(grad)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_held(parser)

    torch.manual_seed(0)
    torch_lrn = torch_reference(torch.nn.LocalResponseNorm(**PAPER))
    ours = {impl: LocalResponseNorm(**PAPER, implementation=impl) for impl in ("torch", "native")}
    rows = []
    print(describe(machine()))
    for layer, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = (torch.randn(shape) * 4).relu().to(dtype).contiguous(memory_format=fmt)
                grad = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
                cases = {"torch.nn": forward_backward(torch_lrn, x, grad)}
                cases |= {f"alexnet-{i}": forward_backward(m, x, grad) for i, m in ours.items()}
                t = interleaved(cases, args.rounds)
                row = {
                    "layer": layer,
                    "shape": list(shape),
                    "dtype": str(dtype).removeprefix("torch."),
                    "memory_format": "channels_last" if fmt is torch.channels_last else "nchw",
                    **{f"{name}_ms": round(v * 1e3, 1) for name, v in t.items()},
                    "speedup": round(t["torch.nn"] / t["alexnet-native"], 2),
                }
                rows.append(row)
                print(
                    f"{layer} {'x'.join(map(str, shape))} {row['dtype']:8s} "
                    f"{row['memory_format']:13s} torch.nn {t['torch.nn'] * 1e3:7.1f} ms  "
                    f"pytorch path {t['alexnet-torch'] * 1e3:6.1f} ms  "
                    f"native {t['alexnet-native'] * 1e3:6.1f} ms  speedup {row['speedup']:.1f}x",
                    flush=True,
                )
    print(f"minimum speedup of the native kernel over torch.nn: "
          f"{min(r['speedup'] for r in rows):.1f}x")  # fmt: skip
    write("lrn", {"rows": rows})


if __name__ == "__main__":
    main()

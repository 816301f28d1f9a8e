"""Forward+backward time of alexnet.lrn.LocalResponseNorm against torch.nn.LocalResponseNorm.

Shapes are the paper's: conv1's output (128x96x55x55) and conv2's (128x256x27x27), batch 128,
in float32 and bfloat16, NCHW and channels_last. torch's CPU LocalResponseNorm has no bfloat16
kernel (avg_pool3d refuses it), so its bfloat16 baseline is what a user must write instead:
compute in float32 and cast back.

    python bench/lrn.py [--repeats 5] [--out bench/results/lrn.json]

Prints one line per case with both median times and the ratio, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from alexnet.lrn import LocalResponseNorm

PAPER = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
SHAPES = {"conv1": (128, 96, 55, 55), "conv2": (128, 256, 27, 27)}


def torch_reference(module: torch.nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.bfloat16:
            return module(x.float()).to(torch.bfloat16)
        return module(x)

    return run


def time_forward_backward(fn, x: torch.Tensor, grad: torch.Tensor, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        leaf = x.detach().requires_grad_()
        start = time.perf_counter()
        fn(leaf).backward(grad)
        if i:  # the first run pays one-off allocation and dispatch costs
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lrn.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    ours = LocalResponseNorm(**PAPER)
    reference = torch_reference(torch.nn.LocalResponseNorm(**PAPER))
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}")
    for layer, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = (torch.randn(shape) * 4).relu().to(dtype).contiguous(memory_format=fmt)
                grad = torch.randn(shape).to(dtype).contiguous(memory_format=fmt)
                t_ref = time_forward_backward(reference, x, grad, args.repeats)
                t_ours = time_forward_backward(ours, x, grad, args.repeats)
                row = {
                    "layer": layer,
                    "shape": list(shape),
                    "dtype": str(dtype).removeprefix("torch."),
                    "memory_format": "channels_last" if fmt is torch.channels_last else "nchw",
                    "torch_ms": round(t_ref * 1e3, 1),
                    "alexnet_ms": round(t_ours * 1e3, 1),
                    "speedup": round(t_ref / t_ours, 2),
                }
                rows.append(row)
                print(
                    f"{layer} {'x'.join(map(str, shape))} {row['dtype']:8s} "
                    f"{row['memory_format']:13s} torch {row['torch_ms']:8.1f} ms  "
                    f"alexnet {row['alexnet_ms']:7.1f} ms  speedup {row['speedup']:.1f}x",
                    flush=True,
                )
    print(f"minimum speedup: {min(r['speedup'] for r in rows):.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

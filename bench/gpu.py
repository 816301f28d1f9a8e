"""Training images/s of the paper's network on one CUDA GPU: bfloat16, channels_last, the
fused SGD and the Triton LRN, eager and under ``torch.compile``, at several batch sizes, on
synthetic data; and the fraction of the GPU's dense bfloat16 peak that it reaches.

    python bench/gpu.py [--batches 128 256 512] [--seconds 8] [--compile-batches 256 512]

Needs only torch (and triton for the LRN kernels) beside the package's source. Synthetic data
measures the network alone; a run fed by the loader is a separate figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from alexnet.models import build_model
from alexnet.summary import summarise

# Dense bfloat16 tensor-core peaks, FLOP/s, from the vendors' data sheets (SXM parts).
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAKS.items() if k in name), None)


def measure(batch: int, seconds: float, compiled: bool) -> float:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("alexnet").to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4,
                          fused=True)  # fmt: skip
    net = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, 227, 227, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # compilation, cuDNN's algorithm search, the allocator's first blocks
        step()
    torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
        if steps % 10 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--compile-batches", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA GPU here")
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
    name = torch.cuda.get_device_name()
    train_flops = 3 * 2 * summarise("alexnet")["total_mult_adds"]  # per image: fwd + 2 bwd
    peak = peak_flops(name)
    print(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{train_flops / 1e9:.2f} GFLOP per training image")  # fmt: skip
    rows = []
    cases = [(b, False) for b in args.batches] + [(b, True) for b in args.compile_batches]
    for batch, compiled in cases:
        try:
            rate = measure(batch, args.seconds, compiled)
        except Exception as exc:  # report and go on: one failed case must not hide the rest
            print(f"batch {batch:4d} {'compiled' if compiled else 'eager':8s} failed: "
                  f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")  # fmt: skip
            rows.append({"batch": batch, "compiled": compiled, "error": str(exc)[:500]})
            continue
        frac = rate * train_flops / peak if peak else None
        rows.append({"batch": batch, "compiled": compiled, "images_per_s": rate,
                     "fraction_of_bf16_peak": frac})  # fmt: skip
        print(f"batch {batch:4d} {'compiled' if compiled else 'eager':8s} {rate:9.0f} img/s"
              + (f"  {100 * frac:.1f}% of {peak / 1e12:.0f} TFLOP/s bf16" if frac else ""),
              flush=True)  # fmt: skip
    best = max((r["images_per_s"] for r in rows if "images_per_s" in r), default=0.0)
    print(f"best {best:.0f} img/s (target 20,000; 90 epochs of ImageNet's 1.28M images in "
          f"{90 * 1.281e6 / max(best, 1) / 3600:.1f} h at that rate)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"gpu": name, "torch": torch.__version__, "rows": rows,
                                    "train_flops_per_image": train_flops}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()

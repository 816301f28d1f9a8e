"""The model behind docs/scaling.md: images/s and time to 90 epochs of the paper's network on
1 to 64 GPUs, from a single-GPU rate, the gradient size, and published interconnect figures.

    python bench/scaling_model.py [--single 20000] [--batch 256] [--hidden 0.55]

A step on N GPUs (weak scaling, ``--batch`` images per GPU) takes
    t(N) = t1 + max(0, allreduce(N) - hidden * t1)
where t1 = batch / single is one GPU's step, allreduce(N) is a ring all-reduce of the
gradients (2 (N - 1) / N of their bytes cross each GPU's slowest link, plus a latency per
hop), and ``hidden`` is the part of a step the all-reduce can overlap: DDP sends gradients
bucket by bucket during the backward pass, and fc8, fc7 and fc6 (58 of the 61 million) are
the first to be ready, so at most the convolutions' backward pass (about 0.55 of a step by
their share of the multiply-adds) can hide it.
"""

from __future__ import annotations

import argparse

PARAMETERS = 60_965_224
IMAGES_PER_EPOCH = 1_281_167
GPUS_PER_NODE = 8
# Bus bandwidths of large all-reduces (bytes/s), from NVIDIA's published nccl-tests figures:
# NVLink 4 through NVSwitch inside a DGX/HGX H100 node, and one 400 Gb/s NDR InfiniBand
# adapter per GPU between nodes (50 GB/s raw; about 45 GB/s reached).
INTRA_NODE = 450e9
INTER_NODE = 45e9
HOP_LATENCY = 10e-6


def allreduce_seconds(n: int, bytes_: float) -> float:
    if n == 1:
        return 0.0
    bandwidth = INTRA_NODE if n <= GPUS_PER_NODE else INTER_NODE
    return 2 * (n - 1) / n * bytes_ / bandwidth + 2 * (n - 1) * HOP_LATENCY


def table(single: float, batch: int, hidden: float) -> list[dict]:
    t1 = batch / single
    rows = []
    for n in (1, 2, 4, 8, 16, 32, 64):
        row = {"gpus": n, "global_batch": n * batch}
        for name, width in (("fp32", 4), ("bf16", 2)):
            ar = allreduce_seconds(n, PARAMETERS * width)
            step = t1 + max(0.0, ar - hidden * t1)
            rate = n * batch / step
            row[name] = {"allreduce_ms": 1e3 * ar, "step_ms": 1e3 * step, "images_per_s": rate,
                         "efficiency": rate / (n * single),
                         "hours_90_epochs": 90 * IMAGES_PER_EPOCH / rate / 3600}  # fmt: skip
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=float, default=20000.0, help="one GPU's images/s")
    parser.add_argument("--batch", type=int, default=256, help="images per GPU per step")
    parser.add_argument("--hidden", type=float, default=0.55)
    args = parser.parse_args()
    print(
        "| GPUs | global batch | all-reduce fp32 / bf16 (ms) | step fp32 / bf16 (ms) | "
        "images/s fp32 / bf16 | efficiency fp32 / bf16 | 90 epochs fp32 / bf16 (h) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in table(args.single, args.batch, args.hidden):
        f, b = r["fp32"], r["bf16"]
        print(f"| {r['gpus']} | {r['global_batch']:,} | {f['allreduce_ms']:.1f} / "
              f"{b['allreduce_ms']:.1f} | {f['step_ms']:.1f} / {b['step_ms']:.1f} | "
              f"{f['images_per_s']:,.0f} / {b['images_per_s']:,.0f} | "
              f"{100 * f['efficiency']:.0f}% / {100 * b['efficiency']:.0f}% | "
              f"{f['hours_90_epochs']:.2f} / {b['hours_90_epochs']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

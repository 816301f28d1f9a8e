"""How a data-parallel step of the paper's network splits into computation and all-reduce,
measured on two CPU processes (gloo), with the gradients sent in float32 and in bfloat16.

Each of two processes runs one thread (the machine's two cores between them; no affinity is
set) with half of the global batch. Per step it measures:
* ``compute``: forward and backward with DDP's communication switched off (``no_sync``);
* ``step``: the real DDP step (the all-reduce overlaps the backward pass bucket by bucket);
* ``all-reduce``: all 61 million gradients all-reduced alone, as one flat tensor.
The gaps say how much of the communication DDP hides; docs/scaling.md carries the figures to
GPUs and interconnects.

    python bench/ddp.py [--batch 32] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from machine import describe, machine, parse_held, write


def timed(fn, steps: int) -> float:
    fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rank_main(rank: int, batch: int, steps: int, port: int, queue) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from alexnet.models import build_model
    from alexnet.runtime import keep_freed_memory

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    keep_freed_memory()
    torch.manual_seed(0)
    model = build_model("alexnet").to(memory_format=torch.channels_last)
    x = torch.randn(batch // 2, 3, 227, 227).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch // 2,))
    result = {}
    for compression in ("fp32", "bf16"):
        net = torch.nn.parallel.DistributedDataParallel(model)
        if compression == "bf16":
            net.register_comm_hook(None, default_hooks.bf16_compress_hook)

        def backward(net=net) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(net(x).float(), y)
            loss.backward()

        def compute(net=net, backward=backward) -> None:
            with net.no_sync():
                backward()

        result[f"{compression} step"] = timed(backward, steps)
        result[f"{compression} compute"] = timed(compute, steps)
        flat = torch.randn(sum(p.numel() for p in model.parameters()))
        flat = flat.bfloat16() if compression == "bf16" else flat
        result[f"{compression} all-reduce"] = timed(lambda flat=flat: dist.all_reduce(flat), steps)
    if rank == 0:
        queue.put(result)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="global batch (half per process)")
    parser.add_argument("--steps", type=int, default=3)
    args = parse_held(parser)
    m = machine()
    print(describe(m))
    queue = mp.get_context("spawn").SimpleQueue()
    port = 29700 + os.getpid() % 1000
    mp.spawn(rank_main, args=(args.batch, args.steps, port, queue), nprocs=2, join=True)
    r = queue.get()
    params = sum(p.numel() for p in __import__("alexnet").build_model("alexnet").parameters())
    for c in ("fp32", "bf16"):
        step, compute, reduce = r[f"{c} step"], r[f"{c} compute"], r[f"{c} all-reduce"]
        print(f"{c} gradients ({params * (2 if c == 'bf16' else 4) / 1e6:.0f} MB): step "
              f"{1e3 * step:.0f} ms = compute {1e3 * compute:.0f} ms + {1e3 * (step - compute):.0f} "
              f"ms that DDP adds; the all-reduce alone takes {1e3 * reduce:.0f} ms")  # fmt: skip
    write("ddp", {"batch": args.batch, "processes": 2, "threads_per_process": 1,
                  "parameters": params, "seconds": r})  # fmt: skip


if __name__ == "__main__":
    main()

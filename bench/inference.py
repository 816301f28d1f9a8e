"""Inference images/s and one-image latency of the paper's network through the package's
inference path (``alexnet.inference.prepared``, which ``alexnet eval``, ``predict`` and ``figures``
use), against the same network written plainly and torchvision's alexnet in its best setting.

Cases, each in its own process, taking turns in rounds (see machine.in_processes):

* ``plain``: the paper's ``alexnet`` with ``torch.nn.LocalResponseNorm``, float32, NCHW,
  ``model.eval()`` under ``torch.no_grad()``.
* ``alexnet``: the package's path (inference.py) with the runtime's automatic choices.
* ``alexnet winograd=off``: the same without Winograd's convolutions (``ALEXNET_WINOGRAD=0``),
  where the path computes in float32 (on CPUs without fast bfloat16), to measure them.
* ``torchvision <precision> <layout>``: torchvision's alexnet at 224x224 under
  ``torch.inference_mode()``, float32 and (where the CPU has fast bfloat16) bfloat16 with
  bfloat16 weights, NCHW and channels_last; its best is the baseline.

Throughput is at ``--batch`` images per call; latency is one image per call, many calls, and
reports the median and the 95th percentile. Loading the network (reading the weights file,
building the network and preparing it) is timed apart, once per process.

    python bench/inference.py [--batch 64] [--rounds 5] [--latency-calls 40] [--isa avx2]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from machine import in_processes, speed_arguments, write
from throughput import plain_alexnet

TARGET = 3.0


def plain_case(model, size: int, batch: int, amp=None, channels_last: bool = False):
    import torch

    x = torch.randn(batch, 3, size, size)
    model.eval()
    if amp is not None:  # what a careful user of plain PyTorch does: weights cast once
        model, x = model.to(amp), x.to(amp)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    guard = torch.no_grad if amp is None and not channels_last else torch.inference_mode

    def run() -> None:
        with guard():
            model(x)

    return run


def package_case(batch: int):
    """The weights saved and loaded as predict and eval load them, then the package's path."""
    import torch

    from alexnet.config import TrainSettings
    from alexnet.inference.prepared import infer, prepare_for_inference
    from alexnet.models import build_model
    from alexnet.runtime import start_runtime

    rt = start_runtime(TrainSettings())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save(build_model("alexnet").state_dict(), path)
        start = time.perf_counter()
        model = build_model("alexnet")
        model.load_state_dict(torch.load(path, weights_only=True))
        prepare_for_inference(model, rt.device, rt.amp, rt.channels_last)
        load_s = time.perf_counter() - start
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, 227, 227).contiguous(memory_format=fmt)

    def run() -> None:
        infer(model, x, rt.amp)

    return run, f"{rt.describe()}; loading {load_s:.2f} s"


def build_case(name: str, batch: int):
    import torch
    import torchvision

    if name == "plain":
        return plain_case(plain_alexnet(), 227, batch), "fp32, NCHW, torch.nn.LocalResponseNorm"
    if name == "alexnet":
        return package_case(batch)
    if name == "alexnet winograd=off":  # this process only: the trick's effect, side by side
        os.environ["ALEXNET_WINOGRAD"] = "0"
        return package_case(batch)
    _, precision, layout = name.split()
    amp = torch.bfloat16 if precision == "bf16" else None
    model = torchvision.models.alexnet()
    return plain_case(model, 224, batch, amp, layout == "channels_last"), f"{precision}, {layout}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-calls", type=int, default=40)
    setup = speed_arguments(parser)
    args, tv = setup["args"], setup["torchvision"]
    # Winograd's convolutions serve float32 only (alexnet.ops.winograd): timed without them too.
    winograd = [] if setup["machine"]["fast_bf16"] else ["alexnet winograd=off"]
    names = ["plain", "alexnet", *winograd, *tv]
    print(f"throughput, batch {args.batch}:")
    cases = in_processes("inference", names, {"batch": args.batch}, args.rounds, 1)
    rate = {n: args.batch / c["seconds"] for n, c in cases.items()}
    best_tv = max(tv, key=rate.get)
    print("latency, one image:")
    single = in_processes("inference", ["plain", "alexnet", best_tv], {"batch": 1},
                          args.latency_calls, 1)  # fmt: skip
    latency = {}
    for n, c in single.items():
        t = sorted(c["rounds"])
        p95 = t[math.ceil(0.95 * len(t)) - 1]  # nearest rank: 95% of the calls took no longer
        latency[n] = {"p50_ms": 1e3 * statistics.median(t), "p95_ms": 1e3 * p95}
    print(f"\n{'case':32s} {'setting':56s} {'img/s':>7s} {'p50 ms':>7s} {'p95 ms':>7s}")
    for n, c in cases.items():
        lat = latency.get(n, {})
        print(f"{n:32s} {c['setting'][:56]:56s} {rate[n]:7.1f} "
              f"{lat.get('p50_ms', float('nan')):7.1f} {lat.get('p95_ms', float('nan')):7.1f}")  # fmt: skip
    print(f"\nalexnet: {cases['alexnet']['setting']}")
    ratios = {"alexnet / plain": rate["alexnet"] / rate["plain"],
              "alexnet / torchvision best": rate["alexnet"] / rate[best_tv]}  # fmt: skip
    if winograd:
        ratios["winograd on / off"] = rate["alexnet"] / rate[winograd[0]]
        print(f"winograd on / off            {ratios['winograd on / off']:5.2f}x")
    print(f"\nalexnet / plain             {ratios['alexnet / plain']:5.2f}x  (target >= {TARGET}x)")
    print(f"alexnet / torchvision best  {ratios['alexnet / torchvision best']:5.2f}x  "
          f"(best: {best_tv})")  # fmt: skip
    write("inference", {"batch": args.batch, "rounds": args.rounds,
                        "cases": {n: {**c, "images_per_s": rate[n]} for n, c in cases.items()},
                        "latency": latency, "best_torchvision": best_tv, "ratios": ratios,
                        "targets": {"alexnet / plain": TARGET}})  # fmt: skip


if __name__ == "__main__":
    main()

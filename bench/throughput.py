"""Training images/s of the paper's network as this package runs it, side by side with the same
network written plainly and with torchvision's alexnet in its best setting.

Cases (batch 64 by default, synthetic data, full steps: forward, loss, backward, SGD update):

* ``plain``: the paper's ``alexnet`` (two towers, LRN) as anyone would write it: float32, NCHW,
  ``torch.nn.LocalResponseNorm``, the default SGD, malloc as it is.
* ``alexnet``: the same network as ``alexnet train`` runs it by default: the runtime, network,
  optimiser and step of the training loop itself, with every choice left on "auto".
* ``alexnet lrn=false``: the same without LRN, so that LRN's share of a step is visible.
* ``alexnet allocator=system``: the same with malloc left as it is (``train.allocator``), so
  that the effect of keeping freed memory is measured on this network.
* ``torchvision <precision> <layout>``: torchvision's alexnet (one tower, no LRN, 224x224) in
  each setting a user could pick: float32 and (where the CPU has fast bfloat16) bfloat16,
  NCHW and channels_last. Its best is the baseline the target is set on.
* ``torchvision <precision> channels_last kept``: the same with freed memory kept (the
  allocator setting of runtime.py, which any user could copy): a stricter baseline, printed
  beside it.

Each case lives in its own process (the allocator setting is per process); the processes take
turns, one at a time, in rounds, so that a slow spell of a shared machine falls on all alike.

    python bench/throughput.py [--batch 64] [--rounds 5] [--steps 2]

Prints images/s per case and the ratios the targets are set on, and writes
bench/results/throughput-<cpu kind>.json.
"""

from __future__ import annotations

import argparse

from machine import in_processes, speed_arguments, write

TARGET_PLAIN = {False: 2.5, True: 3.5}  # without / with fast bfloat16
LRN_SHARE_TARGET = 0.10


def plain_alexnet():
    """The paper's network with torch's own layers in place of this package's: a ReLU layer
    where the package fuses it into the LRN, and ``torch.nn.LocalResponseNorm`` with k=2, n=5
    (torch divides alpha by n, so the paper's alpha=1e-4 is passed as 5e-4)."""
    from torch import nn

    from alexnet.models import build_model
    from alexnet.ops.lrn import LocalResponseNorm, ReLUInLRN

    model = build_model("alexnet")
    for i, layer in enumerate(model.features):
        if isinstance(layer, ReLUInLRN):
            model.features[i] = nn.ReLU(inplace=True)
        elif isinstance(layer, LocalResponseNorm):
            model.features[i] = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    assert not any(isinstance(m, (ReLUInLRN, LocalResponseNorm)) for m in model.modules())
    return model


def plain_step(model, size: int, batch: int, amp=None, channels_last: bool = False):
    """A training step written the usual way, in ``amp`` (autocast dtype) and a layout."""
    import torch

    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def package_step(batch: int, allocator: str = "auto", **options):
    """The training loop's own step, runtime and optimiser, for the paper's recipe with the
    network ``options`` and ``train.allocator`` given."""
    import torch

    from alexnet.config import load_recipe
    from alexnet.runtime import start_runtime
    from alexnet.training.schedules import build_optimizer
    from alexnet.training.train import build_network, forward_loss, resolve, update

    recipe = resolve(load_recipe("imagenet-paper"))
    recipe.model.options.update(options)
    recipe.train.allocator = allocator
    rt = start_runtime(recipe.train)
    net = build_network(recipe, [str(i) for i in range(1000)], rt)
    opt = build_optimizer(net, recipe.optim)
    criterion = torch.nn.CrossEntropyLoss()
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, 227, 227).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,))

    def step() -> None:
        loss, _ = forward_loss(net, criterion, rt, x, y)
        update(opt, loss)

    return step, rt.describe()


def build_case(name: str, batch: int):
    """One case's step function and a line saying how it computes."""
    import torch
    import torchvision

    from alexnet.runtime import keep_freed_memory

    if name == "plain":
        return plain_step(plain_alexnet(), 227, batch), "fp32, NCHW, torch.nn.LocalResponseNorm"
    if name == "alexnet":
        return package_step(batch)
    if name == "alexnet lrn=false":
        return package_step(batch, lrn=False)
    if name == "alexnet allocator=system":
        return package_step(batch, allocator="system")
    _, precision, layout, *kept = name.split()
    if kept:
        keep_freed_memory()
    amp = torch.bfloat16 if precision == "bf16" else None
    model = torchvision.models.alexnet()
    setting = f"{precision}, {layout}" + (", freed memory kept" if kept else "")
    return plain_step(model, 224, batch, amp, layout == "channels_last"), setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="steps per case per round")
    setup = speed_arguments(parser)
    args, m, tv = setup["args"], setup["machine"], setup["torchvision"]
    kept = [f"torchvision {p} channels_last kept" for p in setup["precisions"]]
    ours = ["alexnet", "alexnet lrn=false", "alexnet allocator=system"]
    cases = in_processes("throughput", ["plain", *ours, *tv, *kept],
                         {"batch": args.batch}, args.rounds, args.steps)  # fmt: skip
    for c in cases.values():
        c["images_per_s"] = args.batch / c["seconds"]
    rate = {n: c["images_per_s"] for n, c in cases.items()}
    best_tv, best_kept = max(tv, key=rate.get), max(kept, key=rate.get)
    ratios = {
        "alexnet / plain": rate["alexnet"] / rate["plain"],
        "alexnet / torchvision best": rate["alexnet"] / rate[best_tv],
        "alexnet / torchvision best, memory kept": rate["alexnet"] / rate[best_kept],
        "lrn share of a step": 1 - rate["alexnet"] / rate["alexnet lrn=false"],
        "freed memory kept / malloc as is": rate["alexnet"] / rate["alexnet allocator=system"],
    }
    target = TARGET_PLAIN[m["fast_bf16"]]
    print(f"\n{'case':34s} {'setting':48s} {'img/s':>7s}")
    for name, c in cases.items():
        print(f"{name:34s} {c['setting'][:48]:48s} {c['images_per_s']:7.1f}")
    print(f"\nalexnet / plain             {ratios['alexnet / plain']:5.2f}x  (target >= {target}x)")
    print(f"alexnet / torchvision best  {ratios['alexnet / torchvision best']:5.2f}x  "
          f"(best: {best_tv}; target >= 1.0x)")  # fmt: skip
    print(f"alexnet / torchvision, kept {ratios['alexnet / torchvision best, memory kept']:5.2f}x  "
          f"({best_kept}; stricter, no target)")  # fmt: skip
    print(f"LRN share of a step         {100 * ratios['lrn share of a step']:5.1f}%  "
          f"(target <= {100 * LRN_SHARE_TARGET:.0f}%)")  # fmt: skip
    print(
        f"freed memory kept           {ratios['freed memory kept / malloc as is']:5.2f}x  "
        "(against malloc as is; no target)"
    )
    write("throughput", {"batch": args.batch, "rounds": args.rounds, "steps": args.steps,
                         "cases": cases, "best_torchvision": best_tv, "best_torchvision_kept": best_kept,
                         "ratios": ratios,
                         "targets": {"alexnet / plain": target, "alexnet / torchvision best": 1.0,
                                     "lrn share of a step": LRN_SHARE_TARGET}})  # fmt: skip


if __name__ == "__main__":
    main()

"""How far fewer multiplications could take float32 inference: a bound, not a kernel.

Winograd's F(m, r) computes an m x m tile of an r x r convolution with (m + r - 1)^2
multiplications instead of m^2 r^2; for a whole layer they become (m + r - 1)^2 batched matrix
products of [images x tiles, channels in] by [channels in, channels out] (per tower), plus
transforms of the input tiles and of the results. Here each stride-1 convolution of the paper's
network is timed as the package's inference path runs it (oneDNN, channels_last, batch 64)
against those products alone, for F(2, r) and F(4, r), the transforms left out. No Winograd
convolution on this machine can beat the products alone, so the time they save, taken off the
package's inference path, bounds what Winograd could bring to ``bench/inference.py``'s ratio.
A second, tighter bound adds the least the transforms can cost: writing the products' left
operands and reading their results once each (timed as half a copy of both).

    python bench/winograd.py [--batch 64] [--rounds 5] [--isa avx2]

Float32 only: where the CPU has fast bfloat16 the inference path uses it, and the benchmark
says so and stops (held with --isa avx2 or avx512 it runs). Written to bench/results/winograd-<cpu kind>.json.
"""

from __future__ import annotations

import argparse
import math

from machine import describe, hold_to, in_processes, interleaved, isa_argument, machine, write

TILES = (2, 4)  # F(2, r) and F(4, r); larger tiles lose float32 accuracy (points of size ~8)
TARGET = 3.0  # bench/inference.py's


def stride_one_convolutions(batch: int) -> dict:
    """The network's stride-1 convolutions with the input each sees, found by running it, so
    that no list of the architecture is kept here."""
    import torch

    from alexnet.models import build_model

    model = build_model("alexnet").eval()
    seen = {}

    def record(name: str):
        def hook(module, args, _output) -> None:  # a hook that returns a value replaces the output
            seen[name] = (module, args[0].shape)

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if isinstance(module, torch.nn.Conv2d) and module.stride == (1, 1)]  # fmt: skip
    with torch.inference_mode():
        model(torch.zeros(1, 3, 227, 227))
    for hook in hooks:
        hook.remove()
    return {name: (m, (batch, *shape[1:])) for name, (m, shape) in seen.items()}


def layer_cases(conv, shape: tuple[int, ...]) -> dict:
    """The layer directly, and the products alone of each F(m, r)."""
    import torch

    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    r, groups = conv.kernel_size[0], conv.groups
    n, cin, h, _ = shape
    cout = conv.out_channels
    out = h + 2 * conv.padding[0] - r + 1

    def direct() -> None:
        with torch.inference_mode():
            conv(x)

    cases = {"direct": direct}
    for m in TILES:
        points = (m + r - 1) ** 2
        tiles = n * math.ceil(out / m) ** 2
        a = torch.randn(groups * points, tiles, cin // groups)
        b = torch.randn(groups * points, cin // groups, cout // groups)
        cases[f"F({m},{r})"] = lambda a=a, b=b: torch.bmm(a, b)
        # The transforms write the products' left operands and read their results at least
        # once: half of copying both is less than any transform can take.
        c = torch.bmm(a, b)
        cases[f"F({m},{r}) traffic"] = lambda a=a, c=c: (a.clone(), c.clone())
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    isa_argument(parser)
    args = parser.parse_args()
    hold_to(args.isa)
    print(describe(machine()))
    import torch

    from alexnet.runtime import pick_precision

    if pick_precision("auto", torch.device("cpu")) is not None:
        print("skipped: inference here computes in bfloat16, so a float32 bound says nothing of "
              "it; --isa avx2 or --isa avx512 gives the float32 CPUs' case")  # fmt: skip
        return
    print(f"the network, batch {args.batch}:")
    network = in_processes("inference", ["plain", "alexnet"], {"batch": args.batch},
                           args.rounds, 1)  # fmt: skip
    layers, saved, saved_with_traffic = {}, 0.0, 0.0
    print(f"\n{'layer':12s} {'input':>18s} {'direct ms':>10s} "
          + " ".join(f"{f'F({m},r) ms':>16s}" for m in TILES) + "   (products + traffic)")  # fmt: skip
    for name, (conv, shape) in stride_one_convolutions(args.batch).items():
        times = interleaved(layer_cases(conv, shape), args.rounds)
        direct = times.pop("direct")
        r = conv.kernel_size[0]
        products = {f"F({m},{r})": times[f"F({m},{r})"] for m in TILES}
        traffic = {f"F({m},{r})": times[f"F({m},{r}) traffic"] / 2 for m in TILES}
        layers[name] = {"input": list(shape), "direct_s": direct, "products_s": products,
                        "least_transform_s": traffic}  # fmt: skip
        saved += max(0.0, direct - min(products.values()))
        saved_with_traffic += max(0.0, direct - min(products[f] + traffic[f] for f in products))
        print(f"{name:12s} {'x'.join(map(str, shape)):>18s} {1e3 * direct:10.1f} "
              + " ".join(f"{1e3 * products[f]:7.1f} + {1e3 * traffic[f]:6.1f}" for f in products))  # fmt: skip
    plain, ours = network["plain"]["seconds"], network["alexnet"]["seconds"]
    bounds = {
        "bound / plain": plain / (ours - saved),
        "bound with traffic / plain": plain / (ours - saved_with_traffic),
    }
    print(
        f"\nplain {1e3 * plain:.0f} ms, package {1e3 * ours:.0f} ms ({plain / ours:.2f}x); "
        f"the products alone save at most {1e3 * saved:.0f} ms, "
        f"{1e3 * saved_with_traffic:.0f} ms with the transforms' least traffic"
    )
    print(
        f"Winograd: at most {bounds['bound / plain']:.2f}x plain with free transforms, "
        f"{bounds['bound with traffic / plain']:.2f}x with their least traffic (target {TARGET}x)"
    )
    write("winograd", {"batch": args.batch, "rounds": args.rounds, "network": network,
                       "layers": layers, "saved_at_most_s": saved,
                       "saved_with_traffic_s": saved_with_traffic,
                       "ratios": {"alexnet / plain": plain / ours, **bounds},
                       "targets": {"alexnet / plain": TARGET}})  # fmt: skip


if __name__ == "__main__":
    main()

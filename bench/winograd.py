"""The Winograd convolutions of float32 inference (alexnet.ops.winograd) layer by layer, against
the direct convolution and against what fewer multiplications could do at best.

Winograd's F(m, r) computes an m x m tile of an r x r convolution with (m + r - 1)^2
multiplications instead of m^2 r^2; for a whole layer they become (m + r - 1)^2 batched matrix
products of [images x tiles, channels in] by [channels in, channels out] (per tower), between
a transform of the input's tiles and one of the products' results. Each convolution of the
paper's network is timed as the inference path ran it before (oneDNN, channels_last, batch 64,
freed memory kept), as it runs it now (``WinogradConv2d``), and, for each stride-1 one, with
every tile up to 8 x 8 points (float32 accuracy falls fast beyond), as:

* ``peak``: the multiplications alone at the rate oneDNN reaches on the direct convolution
  (about the machine's peak), the transforms free. No Winograd convolution can beat it.
* ``products``: the products as ``torch.bmm`` does them, the transforms free: what the
  package's layer would take if its transforms cost nothing.
* ``nnpack``: NNPACK's convolution, which PyTorch ships (Winograd or FFT, its own choice), on
  NCHW input, the layout it needs, with the conversions to and from it left out.

    python bench/winograd.py [--batch 64] [--rounds 5] [--isa avx2]

Float32 only: where the CPU has fast bfloat16 the inference path uses it, and the benchmark
says so and stops (held with --isa avx2 or avx512 it runs). Written to
bench/results/winograd-<cpu kind>.json; bench/inference.py gives the whole network's figure.
"""

from __future__ import annotations

import argparse
import math

from machine import describe, interleaved, machine, parse_held, write

WAYS = ("winograd", "peak", "products", "nnpack")


def convolutions(batch: int) -> dict:
    """The network's convolutions with the input each sees, found by running it, so that no
    list of the architecture is kept here."""
    import torch

    from alexnet.models import build_model

    model = build_model("alexnet").eval()
    seen = {}

    def record(name: str):
        def hook(module, args, _output) -> None:  # a hook that returns a value replaces the output
            seen[name] = (module, args[0].shape)

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
             if isinstance(module, torch.nn.Conv2d)]  # fmt: skip
    with torch.inference_mode():
        model(torch.zeros(1, 3, 227, 227))
    for hook in hooks:
        hook.remove()
    return {name: (m, (batch, *shape[1:])) for name, (m, shape) in seen.items()}


def tiles(conv) -> list[int]:
    """The output tile sizes m worth trying: none for a strided convolution."""
    r = conv.kernel_size[0]
    from alexnet.ops.winograd import LARGEST_TILE  # m + r - 1 at most, as the package's

    return [] if conv.stride != (1, 1) else list(range(2, LARGEST_TILE - r + 2))


def products(conv, shape: tuple[int, ...], m: int) -> tuple[int, int, int, int]:
    """F(m, r)'s batched products on ``shape``: (count, rows, inner, columns)."""
    r, groups = conv.kernel_size[0], conv.groups
    out = shape[2] + 2 * conv.padding[0] - r + 1
    rows = shape[0] * math.ceil(out / m) ** 2  # the last row and column of tiles overhang
    return groups * (m + r - 1) ** 2, rows, shape[1] // groups, conv.out_channels // groups


def direct_mult_adds(conv, shape: tuple[int, ...]) -> int:
    out = (shape[2] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    return shape[0] * out * out * conv.out_channels * conv.weight[0].numel()


def layer_cases(conv, shape: tuple[int, ...]) -> dict:
    """The layer directly and by the package's Winograd layer; per tile size its products,
    every buffer made once (a fresh one per call would time the page faults of hundreds of
    MB); and NNPACK's convolution where PyTorch has it."""
    import torch

    from alexnet.ops.winograd import WinogradConv2d, eligible, enabled

    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)

    def timed(layer):
        def run() -> None:
            with torch.inference_mode():
                layer(x)

        return run

    cases = {"direct": timed(conv)}
    if eligible(conv) and enabled():
        cases["winograd"] = timed(WinogradConv2d.of(conv))
    for m in tiles(conv):
        count, rows, inner, columns = products(conv, shape, m)
        a, b = torch.randn(count, rows, inner), torch.randn(count, inner, columns)
        c = torch.bmm(a, b)
        cases[f"F({m}) products"] = lambda a=a, b=b, c=c: torch.bmm(a, b, out=c)
    if tiles(conv) and torch.backends.nnpack.is_available():
        cases["nnpack"] = nnpack_case(conv, x)
    return cases


def nnpack_case(conv, x):
    """NNPACK's convolution per tower on NCHW input; checked against oneDNN's once."""
    import torch

    towers = list(zip(x.contiguous().chunk(conv.groups, 1), conv.weight.detach().chunk(conv.groups),
                      conv.bias.detach().chunk(conv.groups), strict=True))  # fmt: skip

    def run():
        with torch.inference_mode():
            return torch.cat([torch._nnpack_spatial_convolution(t, w, b, list(conv.padding))
                              for t, w, b in towers], 1)  # fmt: skip

    with torch.inference_mode():
        expected = conv(x)
    error = ((run() - expected).abs().max() / expected.abs().max()).item()
    assert error < 1e-3, f"NNPACK's {conv} is off by {error:.2g} of the largest output"
    return run


def time_layer(conv, shape: tuple[int, ...], rounds: int) -> dict:
    """Seconds for the layer directly, by the package's Winograd layer, and the least each
    bound takes over the tile sizes."""
    times = interleaved(layer_cases(conv, shape), rounds)
    direct = times["direct"]
    row = {"input": list(shape), "direct_s": direct, "ways_s": {}, "tiles": {}}
    for m in tiles(conv):
        count, rows, inner, columns = products(conv, shape, m)
        share = count * rows * inner * columns / direct_mult_adds(conv, shape)
        row["tiles"][m] = {"multiplications_share": share, "peak_s": direct * share,
                           "products_s": times[f"F({m}) products"]}  # fmt: skip
    if row["tiles"]:
        for way in ("peak", "products"):
            row["ways_s"][way] = min(t[f"{way}_s"] for t in row["tiles"].values())
    for way in ("winograd", "nnpack"):
        if way in times:
            row["ways_s"][way] = times[way]
    return row


def show(name: str, row: dict) -> None:
    ways = " ".join(f"{1e3 * row['ways_s'].get(w, float('nan')):11.1f}" for w in WAYS)
    print(f"{name:12s} {'x'.join(map(str, row['input'])):>15s} {1e3 * row['direct_s']:9.1f} {ways}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parse_held(parser)
    print(describe(machine()))
    import torch

    from alexnet.runtime import keep_freed_memory, pick_precision

    if pick_precision("auto", torch.device("cpu")) is not None:
        print("skipped: inference here computes in bfloat16, where Winograd is not used; "
              "--isa avx2 or --isa avx512 gives the float32 CPUs' case")  # fmt: skip
        return
    keep_freed_memory()  # as the inference path does (runtime.start_runtime)
    print(f"\n{'layer':12s} {'input':>15s} {'direct ms':>9s} "
          + " ".join(f"{w + ' ms':>11s}" for w in WAYS))  # fmt: skip
    layers = {}
    for name, (conv, shape) in convolutions(args.batch).items():
        layers[name] = time_layer(conv, shape, args.rounds)
        show(name, layers[name])
    totals = {"direct": sum(r["direct_s"] for r in layers.values())}
    for way in WAYS:  # the direct convolution where a way does not apply (conv1)
        totals[way] = sum(r["ways_s"].get(way, r["direct_s"]) for r in layers.values())
    print(
        "\nall five convolutions: " + ", ".join(f"{w} {1e3 * t:.0f} ms" for w, t in totals.items())
    )
    write("winograd", {"batch": args.batch, "rounds": args.rounds, "layers": layers,
                       "totals_s": totals})  # fmt: skip


if __name__ == "__main__":
    main()

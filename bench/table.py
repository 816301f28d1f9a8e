"""One table of every benchmark result in ``results/``, per CPU kind: the figures the targets
are set on, and whether each is met.

    python bench/table.py            # print it
    python bench/table.py --page     # also write it into docs/performance.md, and the rows
                                     # with a target into README.md, between their markers

The performance page's table and the README's are this output, so they never say more than
the files do (tests/test_bench_table.py checks that they are up to date).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from machine import RESULTS

from alexnet.cli_reference import between_markers

PAGE = Path(__file__).parent.parent / "docs" / "performance.md"
README = PAGE.parent.parent / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def _lrn(r: dict) -> tuple[str, str, bool | None]:
    rows = r["rows"]
    if "torch.nn_ms" not in rows[0]:  # the older file: one implementation only
        return (f"LRN fwd+bwd {min(x['speedup'] for x in rows):.1f}x-"
                f"{max(x['speedup'] for x in rows):.1f}x torch.nn (PyTorch path)", "", None)  # fmt: skip
    low, high = min(x["speedup"] for x in rows), max(x["speedup"] for x in rows)
    return f"LRN fwd+bwd {low:.1f}x-{high:.1f}x torch.nn", "", None


def _throughput(r: dict) -> tuple[str, str, bool | None]:
    q, t, c = r["ratios"], r["targets"], r["cases"]
    text = (f"train {c['alexnet']['images_per_s']:.1f} img/s: {q['alexnet / plain']:.2f}x plain, "
            f"{q['alexnet / torchvision best']:.2f}x torchvision best"
            + (f" ({q['alexnet / torchvision best, memory kept']:.2f}x with its freed memory kept)"
               if "alexnet / torchvision best, memory kept" in q else "")
            + (f", {q['freed memory kept / malloc as is']:.2f}x from keeping freed memory"
               if "freed memory kept / malloc as is" in q else "")
            + ", LRN "
            f"{100 * q['lrn share of a step']:.0f}% of a step")  # fmt: skip
    goal = f">= {t['alexnet / plain']}x, >= 1x, <= {100 * t['lrn share of a step']:.0f}%"
    met = (q["alexnet / plain"] >= t["alexnet / plain"] and q["alexnet / torchvision best"] >= 1
           and q["lrn share of a step"] <= t["lrn share of a step"])  # fmt: skip
    return text, goal, met


def _inference(r: dict) -> tuple[str, str, bool | None]:
    q, lat = r["ratios"], r["latency"]["alexnet"]
    loading = re.search(r"loading ([0-9.]+) s", r["cases"]["alexnet"]["setting"])
    text = (f"{r['cases']['alexnet']['images_per_s']:.0f} img/s: {q['alexnet / plain']:.2f}x "
            f"plain, {q['alexnet / torchvision best']:.2f}x torchvision best; one image p50 "
            f"{lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms"
            + (f", loading the network {loading[1]} s" if loading else "")
            + (f"; {q['winograd on / off']:.2f}x from Winograd" if "winograd on / off" in q
               else ""))  # fmt: skip
    target = r["targets"]["alexnet / plain"]
    return text, f">= {target}x plain", q["alexnet / plain"] >= target


def _winograd(r: dict) -> tuple[str, str, bool | None]:
    """The five convolutions' time, directly and by Winograd, beside the best possible."""
    t = r["totals_s"]
    return (f"convolutions {1e3 * t['direct']:.0f} ms directly, {1e3 * t['winograd']:.0f} ms by "
            f"Winograd; at best {1e3 * t['products']:.0f} ms with free transforms, "
            f"{1e3 * t['peak']:.0f} ms at peak; NNPACK {1e3 * t['nnpack']:.0f} ms", "", None)  # fmt: skip


def _placement(r: dict) -> str:
    """Results from before recipe format 3 trained another network: say so beside them."""
    if r.get("recipe_format", 2) >= 3:
        return ""
    return " (before recipe format 3: dropout on the inputs of fc6 and fc7, torch's SGD)"


def _accuracy(r: dict) -> tuple[str, str, bool | None]:
    text = (f"{100 * r['test_accuracy']:.2f}% in {r['train_seconds']:.0f} s of training "
            f"({r['images_per_s']} img/s)")  # fmt: skip
    if "hardware" in r:
        text += f", {100 * r['hardware']['fraction_of_peak']:.0f}% of matmul peak"
    text += _placement(r)
    goal = f"{100 * r['target_accuracy']:.0f}% in {r['target_train_seconds'] / 60:.0f} min"
    return text, goal, r["met"]


def _ddp(r: dict) -> tuple[str, str, bool | None]:
    t = r["seconds"]
    parts = []
    for c in ("fp32", "bf16"):
        step, compute, reduce = t[f"{c} step"], t[f"{c} compute"], t[f"{c} all-reduce"]
        parts.append(f"{c} gradients: step {1e3 * step:.0f} ms = compute {1e3 * compute:.0f} + "
                     f"{1e3 * (step - compute):.0f} ms waiting (all-reduce alone {1e3 * reduce:.0f} ms)")  # fmt: skip
    return "2 processes, " + "; ".join(parts), "", None


def _loader(r: dict) -> tuple[str, str, bool | None]:
    q, t, c = r["ratios"], r["targets"], r["cases"]
    base = c["torchvision"]["images_per_s_per_core"]
    mem = r["memory"]
    system, kept = mem["system"], mem["freed_memory_kept"]
    text = (f"training batches per core: store raw {q['store raw / torchvision']:.1f}x, store "
            f"jpeg {q['store jpeg / torchvision']:.1f}x, JPEG folder "
            f"{q['folder / torchvision']:.1f}x torchvision ImageFolder ({base:.0f} img/s); "
            f"streaming {mem['store_gb']:.0f} GB under a {mem['data_limit_gb']:g} GiB limit, "
            f"anonymous memory per pass {'/'.join(f'{p:.0f}' for p in system['peak_anon_mib_per_pass'])} MiB"
            f" ({'/'.join(f'{p:.0f}' for p in kept['peak_anon_mib_per_pass'])} with freed memory kept)")  # fmt: skip
    goal = ", ".join(f">= {v:g}x" for v in t.values()) + ", flat"
    met = all(q[k] >= v for k, v in t.items()) and system["flat"] and kept["flat"]
    return text, goal, met


def _caltech(r: dict) -> tuple[str, str, bool | None]:
    budget = " (its 15-minute budget)" if r.get("budget") else ""
    text = (f"photos recipe{budget}: {100 * r['top1_acc']:.2f}% top-1 (mean per-class "
            f"{100 * r['mean_class_top1_acc']:.2f}%) in {r['wall_seconds'] / 60:.1f} min of wall "
            f"time, {r['epochs']} epochs{_placement(r)}")  # fmt: skip
    minutes = f"{r['target_wall_seconds'] / 60:.0f} min"
    held = r.get("isa", "native") != "native"  # a slower machine's: the budget kept
    goal = f"ends within {minutes}" if held else f"{100 * r['target_top1_acc']:.0f}% in {minutes}"
    return text, goal, r["met"]


def _paper_recipe(r: dict) -> tuple[str, str, bool | None]:
    """bench/paper_recipe.py: imagenet-paper on Caltech-101 at each input scale."""
    parts = [f"{x['scale']} scale {100 * x['crops_1']['top1_err']:.1f}% top-1 error (10 crops "
             f"{100 * x['crops_10']['top1_err']:.1f}%), top-5 {100 * x['crops_1']['top5_err']:.1f}%"
             f", rate divided after epochs {x['lr_divided_after_epochs'] or 'none'}, "
             f"{x['train_wall_seconds'] / 60:.0f} min" for x in r["results"]]  # fmt: skip
    text = (f"imagenet-paper on Caltech-101 upscaled 128->256, {r['epochs']} epochs "
            f"({r['results'][0]['precision']}): " + "; ".join(parts))  # fmt: skip
    return text, "", None


def _gpu(r: dict) -> tuple[str, str, bool | None]:
    """bench/gpu.py on one GPU: the network alone, then fed from a store by the loader."""
    alone = [x for x in r["rows"] if "images_per_s" in x and not x.get("store")]
    fed = [x for x in r["rows"] if "images_per_s" in x and x.get("store")]
    parts = [f"{x['images_per_s']:,.0f} img/s at batch {x['batch']} "
             f"{'compiled' if x['compiled'] else 'eager'}" for x in alone]  # fmt: skip
    text = "synthetic data: " + ", ".join(parts)
    if r.get("loader_images_per_s"):
        best = max(r["loader_images_per_s"].items(), key=lambda kv: kv[1])
        text += f"; loader alone {best[1]:,.0f} img/s ({best[0]})"
    if "lrn_ms" in r:
        ms = r["lrn_ms"]
        text += (f"; LRN fwd+bwd {ms['conv1 torch'] / ms['conv1 triton']:.1f}x (conv1) and "
                 f"{ms['conv2 torch'] / ms['conv2 triton']:.1f}x (conv2) torch.nn")  # fmt: skip
    if not fed:
        return text, ">= 20,000 img/s from a store", None
    rate = max(x["images_per_s"] for x in fed)
    return f"{rate:,.0f} img/s trained from a raw store; {text}", ">= 20,000 img/s", rate >= 20_000


SUMMARIES: dict[str, Callable[[dict], tuple[str, str, bool | None]]] = {
    "lrn": _lrn, "throughput": _throughput, "inference": _inference,
    "winograd": _winograd, "loader": _loader,
    "fashion_mnist": _accuracy, "cifar10": _accuracy, "caltech101": _caltech, "ddp": _ddp,
    "paper_recipe": _paper_recipe, "gpu": _gpu,
}  # fmt: skip


class ResultError(ValueError):
    """A results file that cannot be read as its benchmark writes it."""


def rows() -> list[tuple[str, str, str, str, str]]:
    out = []
    for name, summary in SUMMARIES.items():
        for path in sorted(RESULTS.glob(f"{name}-*.json")):
            try:
                r = json.loads(path.read_text())
                text, goal, met = summary(r)
            except (ValueError, KeyError, TypeError) as exc:
                raise ResultError(f"{path}: not a result of bench/{name}.py ({exc!r}); run "
                                  f"it again or remove the file") from None  # fmt: skip
            m = r.get("machine")
            cpu = f"{m['cpu']} ({m['kind']})" if m else f"{r['gpu']} (torch {r['torch']})"
            verdict = "" if met is None else ("yes" if met else "no")
            out.append((f"`{path.name}`", cpu, text, goal, verdict))
    return out


def markdown(targets_only: bool = False) -> str:
    """The table; ``targets_only``: the rows that have a target (the README's)."""
    lines = ["| result | CPU (kind) | measured | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows() if r[3] or not targets_only]
    return "\n".join(lines)


def write_between_markers(path: Path, table: str) -> None:
    path.write_text(between_markers(path.read_text(), START, END, table, str(path)))
    print(f"wrote the table into {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", action="store_true",
                        help="write the table into docs/performance.md, and its rows with a "
                             "target into README.md")  # fmt: skip
    args = parser.parse_args()
    try:
        table = markdown()
        print(table)
        if args.page:
            write_between_markers(PAGE, table)
            write_between_markers(README, markdown(targets_only=True))
    except ValueError as exc:  # an unreadable result, or a page without its markers
        print(f"bench/table.py: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

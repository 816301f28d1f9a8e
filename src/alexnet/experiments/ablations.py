"""The paper's design choices removed one at a time, each over several seeds, against the full
network: what each is worth here, beside what the paper measured.

The variants are a table of changes to the base recipe (by default CIFAR-10's ``alexnet-small``
with PCA colour noise added, so that removing it means something). Where a switch changes more
than its feature, the table says so: non-overlapping 2x2 pooling leaves a larger last map
(4x4 instead of 3x3 for 32x32 images) and so a wider fc6; and the paper's two-tower network is
compared, as in the paper, with a one-tower network with half as many kernels in each
convolutional layer but the last ("the one-GPU net actually has the same number of kernels as
the two-GPU net in the final convolutional layer", and the same fully connected layers), not
with the same widths in one tower.

A difference counts as more than seed noise when Welch's t over the seeds (each network's spread,
with the test set's own sampling error added) puts it outside the 95% range; with two or three
seeds only large effects pass, and the results say so.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alexnet.config import Recipe, recipe_from_dict
from alexnet.errors import UserError
from alexnet.experiments.sweep import Planned, test_images, train_all


def _options(table: dict) -> dict:
    return table["model"].setdefault("options", {})


def _one_tower(table: dict) -> None:
    """Half the kernels of conv1-conv4 in one tower; conv5 and fc6-fc8 as they were."""
    options = _options(table)
    widths = list(options.get("widths") or [64, 128, 192, 192, 128])
    options.update(two_towers=False, widths=[w // 2 for w in widths[:4]] + widths[4:])


@dataclass(frozen=True)
class Variant:
    name: str
    removes: str
    change: Callable[[dict], None]  # applied to the base recipe's table
    paper: str  # the paper's measured effect of the feature
    note: str = ""


VARIANTS: tuple[Variant, ...] = (
    Variant("full", "nothing", lambda t: None, ""),
    Variant("no-lrn", "local response normalisation", lambda t: _options(t).update(lrn=False),
            "+1.4 / +1.2 (ImageNet); CIFAR-10's four-layer network 11% -> 13%"),
    Variant("lrn-constant", "LRN's normalisation, kept as a constant division",
            lambda t: _options(t).update(lrn_alpha=0.0),
            "", "alpha = 0: every activation divided by k^beta = 2^0.75, as LRN does where "
            "its neighbours are small; against no-lrn, what the division alone is worth"),
    Variant("no-overlap", "overlapping pooling (3x3, stride 2)",
            lambda t: _options(t).update(pooling="non-overlapping"),
            "+0.4 / +0.3 (against 2x2/2 pooling of the same output size)",
            "2x2/2 pooling: the last map is 4x4 instead of 3x3, so fc6 has 16/9 as many inputs"),
    Variant("no-dropout", "dropout", lambda t: _options(t).update(dropout=0.0),
            "substantial overfitting"),
    Variant("no-pca", "PCA colour augmentation",
            lambda t: t.setdefault("augment", {}).update(pca_std=0.0),
            "more than +1 top-1"),
    Variant("one-tower", "two towers", _one_tower,
            "+1.7 / +1.2 against one tower with half the kernels (about as many parameters)",
            "one tower with half the kernels of conv1-4, conv5 and fc layers kept: here 21% "
            "fewer parameters, as fc6 is not most of a small network's"),
)  # fmt: skip
BY_NAME = {v.name: v for v in VARIANTS}


def variant_recipe(base: Recipe, variant: Variant, seed: int, epochs: int | None) -> Recipe:
    table = base.to_dict()
    table.setdefault("augment", {}).setdefault("pca_std", 0.1)
    if not table["augment"]["pca_std"]:
        table["augment"]["pca_std"] = 0.1  # the full network has the paper's colour noise
    table.update(name=f"ablation-{variant.name}", seed=seed)
    if epochs:
        table["epochs"] = epochs
    variant.change(table)
    return recipe_from_dict(table, f"ablation {variant.name}")


def run_ablations(base: Recipe, out: Path, *, seeds: int = 2, epochs: int | None = 3,
                  variants: Sequence[str] = tuple(BY_NAME), progress: bool = True,
                  say: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Every variant with ``seeds`` seeds, ``epochs`` each (None: the recipe's); writes
    results.md and results.json and ablations.png into ``out``, returns the results."""
    unknown = [v for v in variants if v not in BY_NAME]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(BY_NAME)}")
    chosen = ["full", *(v for v in variants if v != "full")]
    runs = [Planned(f"{v}-seed{s}", variant_recipe(base, BY_NAME[v], s, epochs))
            for v in chosen for s in range(seeds)]  # fmt: skip
    metrics = train_all(runs, out, progress, say)
    done = next((out / run.name for run in runs if metrics[run.name]), None)
    tested = test_images(done) if done else 1
    results = summarise(metrics, chosen, seeds, runs[0].recipe.epochs, tested)
    write_results(results, out)
    return results


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


# Two-sided 95% points of Student's t for 1 to 10 degrees of freedom (beyond: about 2).
T95 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23)


def beyond_noise(row: dict, full: dict, test_images: int) -> bool:
    """Whether a variant's mean top-1 error differs from the full network's by more than the
    95% point of Welch's t for the seeds each finished; each seed's error also carries the test
    set's own sampling error, p(1 - p) / N, which keeps two equal-looking seeds from making
    any difference count."""
    n, m = len(row["top1"]), len(full["top1"])
    if n < 2 or m < 2:
        return False
    p = full["top1_mean"] / 100

    def var(r: dict) -> float:
        return (r["top1_sd"] / 100) ** 2 + p * (1 - p) / test_images

    se = (var(row) / n + var(full) / m) ** 0.5
    df = n + m - 2
    return abs(row["delta_top1"] / 100) > (T95[df - 1] if df <= len(T95) else 2.0) * se


def summarise(metrics: dict[str, list[dict]], chosen: list[str], seeds: int, epochs: int,
              test_images: int) -> dict:  # fmt: skip
    """Mean and spread of the final test errors per variant (over the seeds that finished; a
    variant none of whose seeds finished is left out, and listed), and each difference from
    the full network with whether it is more than seed noise."""
    rows, missing = {}, []
    for v in chosen:
        finals = [metrics[f"{v}-seed{s}"][-1] for s in range(seeds)
                  if len(metrics[f"{v}-seed{s}"]) == epochs]  # fmt: skip
        if not finals:
            missing.append(v)
            continue
        top1 = [100 * m["val_top1_err"] for m in finals]
        top5 = [100 * m["val_top5_err"] for m in finals]
        rows[v] = {"top1": top1, "top5": top5, "top1_mean": statistics.fmean(top1),
                   "top1_sd": _spread(top1), "top5_mean": statistics.fmean(top5),
                   "top5_sd": _spread(top5)}  # fmt: skip
    if "full" not in rows:
        raise UserError("ablations: no run of the full network finished (diverged?); nothing "
                         "to compare with")  # fmt: skip
    full = rows["full"]
    for row in rows.values():
        row["delta_top1"] = row["top1_mean"] - full["top1_mean"]
        row["delta_top5"] = row["top5_mean"] - full["top5_mean"]
        row["beyond_noise"] = beyond_noise(row, full, test_images)
    return {"seeds": seeds, "epochs": epochs, "rows": rows, "missing": missing}


def results_table(results: dict) -> str:
    lines = ["| without | top-1 error (mean ± sd) | top-5 error | change in top-1 / top-5 | "
             "beyond seed noise (95%) | the paper (removing it) | note |",
             "|---|---:|---:|---:|---|---|---|"]  # fmt: skip
    for name, r in results["rows"].items():
        v = BY_NAME[name]
        change = "-" if name == "full" else f"{r['delta_top1']:+.2f} / {r['delta_top5']:+.2f}"
        noise = "-" if name == "full" else ("yes" if r["beyond_noise"] else "no")
        lines.append(f"| {v.removes if name != 'full' else '(the full network)'} "
                     f"| {r['top1_mean']:.2f}% ± {r['top1_sd']:.2f} "
                     f"| {r['top5_mean']:.2f}% ± {r['top5_sd']:.2f} | {change} | {noise} "
                     f"| {v.paper or '-'} | {v.note or '-'} |")  # fmt: skip
    return "\n".join(lines)


def write_results(results: dict, out: Path) -> None:
    from alexnet.files import write_text
    from alexnet.inference import figures

    # The figure first and results.md last, each whole: an experiment stopped while writing
    # them left a results.md whose figure was missing. A results.md has all three.
    figures.save(ablation_figure(results), out / "ablations.png")
    write_text(out / "results.json", json.dumps(results, indent=1))
    head = (f"# Ablations: {results['seeds']} seed(s) of {results['epochs']} epoch(s) each\n\n"
            "Test error in percent; a change is positive when removing the feature raises the "
            "error. Beyond seed noise: Welch's t at 95% over the seeds, with the test set's own "
            "sampling error (ablations.py); with two or three seeds only large effects pass."
            + (f" No run finished for: {', '.join(results['missing'])}." if results["missing"]
               else "") + "\n\n")  # fmt: skip
    write_text(out / "results.md", head + results_table(results) +
                                    "\n\n![ablations](ablations.png)\n")  # fmt: skip


def ablation_figure(results: dict):
    """Each variant's top-1 test error, every seed a dot, the mean a bar."""
    from matplotlib.figure import Figure

    rows = results["rows"]
    fig = Figure(figsize=(1.3 * len(rows) + 1.5, 3.8), dpi=110)
    ax = fig.subplots()
    names = list(rows)
    ax.bar(range(len(names)), [rows[n]["top1_mean"] for n in names], color="#9ecae1")
    for i, n in enumerate(names):
        ax.plot([i] * len(rows[n]["top1"]), rows[n]["top1"], "o", color="#08519c", ms=4)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    lowest = min(min(r["top1"]) for r in rows.values())
    ax.set_ylim(max(0.0, lowest - 5), None)
    ax.set(ylabel="top-1 test error (%)",
           title=f"Ablations: {results['seeds']} seed(s), {results['epochs']} epoch(s)")  # fmt: skip
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig

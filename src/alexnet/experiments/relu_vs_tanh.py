"""Figure 1: "A four-layer convolutional neural network with ReLUs (solid line) reaches a 25%
training error rate on CIFAR-10 six times faster than an equivalent network with tanh neurons
(dashed line). The learning rates for each network were chosen independently to make training
as fast as possible. No regularization of any kind was employed." (Its tanh network needed
about 35 epochs.)

Here: ``convnet4`` with each activation (sigmoid too, which section 3.1 discusses), no weight
decay, dropout, LRN, augmentation or label smoothing, a constant rate with momentum 0.9. Each
activation's rate is the one with the lowest training error after one epoch on 10,000 images,
among a few (extended where the best is at an end of those tried); the time left of the budget is then shared equally by the activations' runs.

Training error is the running error of each epoch, as the training loop records it: the mean
over the epoch's batches while the weights change (the paper's curve, from cuda-convnet, is the
same kind of figure). The epoch at which a curve crosses 25% is interpolated linearly between
the epochs around it. A curve that never crosses within its epochs makes the factor a lower
bound, said as such.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from alexnet.config import Recipe, recipe_from_dict
from alexnet.experiments.sweep import Planned, saved_plan, train_all

TARGET = 0.25
ACTIVATIONS = ("relu", "tanh", "sigmoid")
RATES = (0.003, 0.01, 0.03, 0.1, 0.3)
SWEEP_IMAGES = 10_000
EXTEND = 3  # sweep steps beyond the rates given, where the best is at an end
STYLES = {"relu": "-", "tanh": "--", "sigmoid": ":"}


def figure1_recipe(base: Recipe, activation: str, lr: float, epochs: int, limit: int) -> Recipe:
    """The base recipe's data and hardware settings, Figure 1's network and training."""
    table = base.to_dict()
    table.update(name=f"figure1-{activation}", epochs=epochs)
    table["model"] = {"arch": "convnet4", "options": {"activation": activation}}
    table["augment"] = {"crop_padding": 0, "flip": False, "pca_std": 0.0}
    table["optim"] = {"lr": lr, "momentum": 0.9, "weight_decay": 0.0, "label_smoothing": 0.0}
    table["schedule"] = {"name": "constant"}
    table["eval"] = {"tta_flip": False}
    table["data"].update(limit_train=limit, normalise="channel")
    return recipe_from_dict(table, "relu-vs-tanh")


def crossing(metrics: Sequence[dict], target: float = TARGET) -> float | None:
    """The (interpolated) epoch at which the training error first reaches ``target``."""
    before = (0.0, 1.0)
    for m in metrics:
        now = (float(m["epoch"]), m["train_top1_err"])
        if now[1] <= target:
            (e0, r0), (e1, r1) = before, now
            return e1 if r0 == r1 else e0 + (r0 - target) / (r0 - r1) * (e1 - e0)
        before = now
    return None


def sweep_name(activation: str, lr: float) -> str:
    return f"sweep-{activation}-lr{lr:.2g}"


def choose_rates(base: Recipe, activations, rates, out: Path, progress: bool, say) -> dict:
    """The sweep: one epoch on ``SWEEP_IMAGES`` images per activation and rate. A best rate at
    an end of the rates tried is not known to be best: the sweep goes one step further that way
    (the grid's own ratio), up to ``EXTEND`` times, until the best has a worse rate each side."""
    step = (max(rates) / min(rates)) ** (1 / max(1, len(rates) - 1))
    tried = {a: sorted(rates) for a in activations}
    tick, errors, seconds = time.perf_counter(), {}, []
    for extension in range(EXTEND + 1):
        runs = [Planned(sweep_name(a, r), figure1_recipe(base, a, r, 1, SWEEP_IMAGES))
                for a in activations for r in tried[a]]  # fmt: skip
        results = train_all(runs, out, progress, say)
        for run in runs:  # a diverged run (no metrics) counts as learning nothing
            metrics = results[run.name]
            errors[run.name] = metrics[-1]["train_top1_err"] if metrics else 1.0
            seconds += [metrics[-1]["epoch_seconds"]] if metrics else []
        best = {a: min(tried[a], key=lambda r, a=a: errors[sweep_name(a, r)]) for a in activations}
        edges = {a: r for a, r in best.items() if r in (tried[a][0], tried[a][-1])}
        if not edges or extension == EXTEND:
            break
        for a, r in edges.items():
            tried[a] = sorted(
                {*tried[a], float(f"{r / step if r == tried[a][0] else r * step:.2g}")}
            )
    return {"rates": best, "sweep_errors": errors, "sweep_seconds": time.perf_counter() - tick,
            "seconds_per_image": (sum(seconds) / len(seconds)) / SWEEP_IMAGES}  # fmt: skip


def plan_runs(base: Recipe, budget_s: float, activations, rates, out: Path, progress: bool,
              say, train_images: int) -> dict:  # fmt: skip
    """The rates and the epochs that fit the budget (saved, so a restart keeps them)."""

    def make() -> dict:
        sweep = choose_rates(base, activations, rates, out, progress, say)
        left = max(0.0, budget_s - sweep["sweep_seconds"])
        # Training time per epoch, plus a fifth for evaluation and checkpoints.
        epoch_s = 1.2 * sweep["seconds_per_image"] * train_images
        epochs = max(1, math.floor(left / len(activations) / epoch_s))
        return {**sweep, "epochs": epochs, "budget_seconds": budget_s, "epoch_seconds": epoch_s}

    return saved_plan(out, make)


def run_relu_vs_tanh(base: Recipe, out: Path, *, budget_minutes: float = 15.0,
                     activations: Sequence[str] = ACTIVATIONS, rates: Sequence[float] = RATES,
                     progress: bool = True, say: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Figure 1 within ``budget_minutes`` of wall time; writes figure1.png, results.md and
    results.json into ``out`` and returns the results."""
    from alexnet.train import load_data, resolve

    if "relu" not in activations:
        raise ValueError("relu-vs-tanh: the activations must include relu, the reference")
    train_images = len(load_data(resolve(figure1_recipe(base, "relu", 0.01, 1, 0)))[0])
    plan = plan_runs(base, budget_minutes * 60, activations, rates, out, progress, say,
                     train_images)  # fmt: skip
    runs = [Planned(f"figure1-{a}", figure1_recipe(base, a, plan["rates"][a], plan["epochs"], 0))
            for a in activations]  # fmt: skip
    curves = {a: metrics for a, metrics in zip(activations, train_all(runs, out, progress,
                                                                      say).values(), strict=True)}  # fmt: skip
    results = summarise(curves, plan)
    write_results(results, curves, out)
    return results


def summarise(curves: dict[str, list[dict]], plan: dict) -> dict:
    """Epochs and seconds to 25% per activation, and each one's factor against ReLU."""
    rows = {}
    for a, metrics in curves.items():
        at = crossing(metrics)
        seconds = None
        if at is not None:  # training seconds up to the crossing, interpolated the same way
            whole = [m["train_seconds"] for m in metrics]
            k = min(math.ceil(at), len(whole)) - 1
            seconds = (whole[k - 1] if k else 0.0) + (at - k) * metrics[k]["epoch_seconds"]
        rows[a] = {"lr": plan["rates"][a], "epochs_run": len(metrics), "epochs_to_25": at,
                   "seconds_to_25": seconds,
                   "final_train_err": metrics[-1]["train_top1_err"] if metrics else None}  # fmt: skip
    relu = rows["relu"]["epochs_to_25"]
    for a, row in rows.items():
        if a == "relu" or relu is None:
            row["factor"], row["bound"] = None, None
        elif row["epochs_to_25"] is not None:
            row["factor"], row["bound"] = row["epochs_to_25"] / relu, "exact"
        else:  # not reached within its epochs: at least that many
            row["factor"], row["bound"] = row["epochs_run"] / relu, "lower"
    return {
        "target": TARGET,
        "budget_minutes": plan["budget_seconds"] / 60,
        "epochs": plan["epochs"],
        "rows": rows,
        "sweep_errors": plan["sweep_errors"],
    }


def results_table(results: dict) -> str:
    lines = ["| activation | learning rate | epochs run | epochs to 25% training error | "
             "training s to 25% | slower than ReLU by |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for a, r in results["rows"].items():
        at = "not reached" if r["epochs_to_25"] is None else f"{r['epochs_to_25']:.1f}"
        secs = "-" if r["seconds_to_25"] is None else f"{r['seconds_to_25']:.0f}"
        factor = "-" if r["factor"] is None else \
            f"{'more than ' if r['bound'] == 'lower' else ''}{r['factor']:.1f}x"  # fmt: skip
        lines.append(f"| {a} | {r['lr']:g} | {r['epochs_run']} | {at} | {secs} | {factor} |")
    return "\n".join(lines)


def write_results(results: dict, curves: dict[str, list[dict]], out: Path) -> None:
    from alexnet import figures

    (out / "results.json").write_text(json.dumps(results, indent=1))
    note = (f"Budget {results['budget_minutes']:g} minutes; training error is the running error "
            "of each epoch (relu_vs_tanh.py). The paper: ReLU six times faster than tanh.")  # fmt: skip
    (out / "results.md").write_text(f"# Figure 1: ReLU against tanh\n\n{results_table(results)}"
                                    f"\n\n{note}\n\n![Figure 1](figure1.png)\n")  # fmt: skip
    figures.save(figure1(curves), out / "figure1.png")


def figure1(curves: dict[str, list[dict]]):
    """Training error against epochs, one line per activation, the 25% line dashed grey."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.subplots()
    for a, metrics in curves.items():
        epochs = [0] + [m["epoch"] for m in metrics]
        errors = [100.0] + [100 * m["train_top1_err"] for m in metrics]
        ax.plot(epochs, errors, STYLES.get(a, "-"), label=a)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(100 * TARGET, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="epochs", ylabel="training error (%)", ylim=(0, 100),
           title="Figure 1: the four-layer network on CIFAR-10")  # fmt: skip
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig

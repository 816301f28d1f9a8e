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

import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from alexnet.config import Recipe, recipe_from_dict
from alexnet.errors import UserError
from alexnet.experiments.sweep import Planned, saved_plan, train_all

TARGET = 0.25
ACTIVATIONS = ("relu", "tanh", "sigmoid")
RATES = (0.003, 0.01, 0.03, 0.1, 0.3)
SWEEP_IMAGES = 10_000
EXTEND = 3  # sweep steps beyond the rates given, where the best is at an end
MAX_EPOCHS = 60  # per activation, however long the budget (the paper's tanh needed about 35)
STYLES = {"relu": "-", "tanh": "--", "sigmoid": ":"}


def figure1_recipe(base: Recipe, activation: str, lr: float, epochs: int, limit: int) -> Recipe:
    """The base recipe's data and hardware settings, Figure 1's network and training; at most
    ``limit`` training images (0: all), and never more than the base recipe's own limit."""
    own = base.data.limit_train
    limit = min(limit, own) if limit and own else limit or own
    table = base.to_dict()
    table.update(name=f"figure1-{activation}", epochs=epochs)
    table["model"] = {"arch": "convnet4", "options": {"activation": activation}}
    table["augment"] = {"crop_padding": 0, "flip": False, "pca_std": 0.0}
    table["optim"] = {"lr": lr, "momentum": 0.9, "weight_decay": 0.0, "label_smoothing": 0.0}
    table["schedule"] = {"name": "constant"}
    table["eval"] = {"tta_flip": False}
    table["data"].update(limit_train=limit, normalise="channel")
    return recipe_from_dict(table, "relu-vs-tanh")


def points(metrics: Sequence[dict], chance: float) -> list[tuple[float, float]]:
    """(epochs trained, training error) for a curve: the untrained network at chance, then each
    epoch's running error at the epoch's middle, the average position of the batches it
    averages over."""
    return [(0.0, chance)] + [(m["epoch"] - 0.5, m["train_top1_err"]) for m in metrics]


def crossing(metrics: Sequence[dict], chance: float, target: float = TARGET) -> float | None:
    """The (interpolated) epochs trained when the training error first reaches ``target``."""
    curve = points(metrics, chance)
    for (e0, r0), (e1, r1) in itertools.pairwise(curve):
        if r1 <= target:
            return e1 if r0 == r1 else e0 + (r0 - target) / (r0 - r1) * (e1 - e0)
    return None


def sweep_name(activation: str, lr: float) -> str:
    return f"sweep-{activation}-lr{lr:g}"


def choose_rates(base: Recipe, activations, rates, out: Path, progress: bool, say,
                 chance: float, budget_s: float = math.inf, widen: bool = True) -> dict:  # fmt: skip
    """The sweep: one epoch on ``SWEEP_IMAGES`` images per activation and rate. A best rate at
    an end of the rates tried is not known to be best: the sweep goes one step further that way
    (the grid's own ratio), up to ``EXTEND`` times, until the best has a worse rate each side.
    It does not widen rates the user chose (``widen``), nor beyond ``budget_s`` seconds: with
    --budget 1 and two rates it widened for 4 minutes before saying the budget was short."""
    step = (max(rates) / min(rates)) ** (1 / max(1, len(rates) - 1))
    tried = {a: sorted(rates) for a in activations}
    errors, seconds = {}, []
    for extension in range(EXTEND + 1):
        runs = [Planned(sweep_name(a, r), figure1_recipe(base, a, r, 1, SWEEP_IMAGES))
                for a in activations for r in tried[a]]  # fmt: skip
        results = train_all(runs, out, progress, say)
        for run in runs:  # a diverged run (no metrics) counts as learning nothing
            metrics = results[run.name]
            errors[run.name] = metrics[-1]["train_top1_err"] if metrics else 1.0
            seconds += [metrics[-1]["epoch_seconds"]] if metrics else []
        best = {a: min(tried[a], key=lambda r, a=a: errors[sweep_name(a, r)]) for a in activations}
        edges = {a: r for a, r in best.items() if r in (tried[a][0], tried[a][-1]) and step > 1}
        cost = sum(1.2 * s + 3 for s in seconds)  # as below
        more = cost / max(1, len(seconds)) * len(edges)  # one run more per activation widened
        if not (widen and edges) or extension == EXTEND or cost + more > budget_s:
            break
        for a, r in edges.items():
            tried[a] = sorted(
                {*tried[a], float(f"{r / step if r == tried[a][0] else r * step:.2g}")}
            )
    if not seconds:
        raise UserError("relu-vs-tanh: every run of the learning-rate sweep diverged; give "
                         "lower --rates")  # fmt: skip
    # The sweep's cost: training, and about a fifth more plus 3 s per run for evaluation,
    # checkpoints and loading the data (measured on CIFAR-10, 2-core CPU).
    cost = sum(1.2 * s + 3 for s in seconds)
    return {"rates": best, "sweep_errors": errors, "sweep_seconds": cost,
            "seconds_per_image": sorted(seconds)[len(seconds) // 2] / SWEEP_IMAGES,
            "at_edge": sorted(edges)}  # fmt: skip


def run_relu_vs_tanh(base: Recipe, out: Path, *, budget_minutes: float = 15.0,
                     activations: Sequence[str] = ACTIVATIONS, rates: Sequence[float] | None = None,
                     progress: bool = True, say: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Figure 1 within ``budget_minutes`` of wall time; writes figure1.png, results.md and
    results.json into ``out`` and returns the results. ``rates``: the ones to try, exactly
    (default: RATES, widened where the best is at an end)."""
    from alexnet.training.train import load_data, resolve

    widen, rates = rates is None, RATES if rates is None else rates

    if "relu" not in activations:
        raise UserError("relu-vs-tanh: the activations must include relu, the reference")
    train = load_data(resolve(figure1_recipe(base, "relu", 0.01, 1, 0)))[0]
    chance = 1 - 1 / len(train.classes)
    inputs = {"budget_minutes": budget_minutes, "activations": list(activations),
              "rates": list(rates), "recipe": base.to_dict()}  # fmt: skip

    def make() -> dict:
        sweep = choose_rates(base, activations, rates, out, progress, say, chance,
                             budget_s=budget_minutes * 60, widen=widen)  # fmt: skip
        left = budget_minutes * 60 - sweep["sweep_seconds"]
        # Training time per epoch, plus a fifth for evaluation and checkpoints.
        epoch_s = 1.2 * sweep["seconds_per_image"] * len(train)
        fit_in = math.floor(left / len(activations) / epoch_s)
        if fit_in < 1:  # the sweep's runs are kept: the next try does not repeat them
            enough = math.ceil((sweep["sweep_seconds"] + epoch_s * len(activations)) / 60)
            raise UserError(f"--budget {budget_minutes:g}: the rate sweep took "
                             f"{sweep['sweep_seconds'] / 60:.1f} of its minutes, and one epoch "
                             f"per activation needs about {max(1, round(epoch_s * len(activations)))} s "
                             f"more; give --budget {enough} or more (the sweep is not "
                             "repeated)")  # fmt: skip
        return {**sweep, "epochs": min(MAX_EPOCHS, fit_in), "epoch_seconds": epoch_s}

    plan = saved_plan(out, inputs, make)
    runs = [Planned(f"figure1-{a}", figure1_recipe(base, a, plan["rates"][a], plan["epochs"], 0))
            for a in activations]  # fmt: skip
    curves = dict(zip(activations, train_all(runs, out, progress, say).values(), strict=True))
    diverged = {a for a in activations if (out / f"figure1-{a}.diverged").is_file()}
    results = summarise(curves, plan, chance, diverged)
    write_results(results, curves, out, chance)
    return results


def summarise(curves: dict[str, list[dict]], plan: dict, chance: float,
              diverged: set[str] = frozenset()) -> dict:  # fmt: skip
    """Epochs and seconds to 25% per activation, and each one's factor against ReLU."""
    rows = {}
    for a, metrics in curves.items():
        at = crossing(metrics, chance)
        seconds = None
        if at is not None:  # training seconds up to the crossing, interpolated the same way
            whole = [m["train_seconds"] for m in metrics]
            k = min(math.ceil(at), len(whole)) - 1
            seconds = (whole[k - 1] if k else 0.0) + (at - k) * metrics[k]["epoch_seconds"]
        rows[a] = {"lr": plan["rates"][a], "epochs_run": len(metrics), "epochs_to_25": at,
                   "seconds_to_25": seconds, "diverged": a in diverged,
                   "final_train_err": metrics[-1]["train_top1_err"] if metrics else None}  # fmt: skip
    relu = rows["relu"]["epochs_to_25"]
    for a, row in rows.items():
        row["factor"], row["bound"] = None, None
        if a == "relu" or relu is None or not curves[a]:
            continue
        if row["epochs_to_25"] is not None:
            row["factor"], row["bound"] = row["epochs_to_25"] / relu, "exact"
        else:  # not reached within its epochs: at least the middle of its last one
            row["factor"], row["bound"] = (row["epochs_run"] - 0.5) / relu, "lower"
    return {"target": TARGET, "budget_minutes": plan["inputs"]["budget_minutes"],
            "epochs": plan["epochs"], "rows": rows, "sweep_errors": plan["sweep_errors"],
            "at_edge": plan.get("at_edge", []),
            "no_learning_in_sweep": [a for a in curves if min(
                e for name, e in plan["sweep_errors"].items() if name.startswith(f"sweep-{a}-lr"))
                >= chance - 0.02]}  # fmt: skip


def results_table(results: dict) -> str:
    lines = ["| activation | learning rate | epochs run | epochs to 25% training error | "
             "training s to 25% | slower than ReLU by |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for a, r in results["rows"].items():
        at = "not reached" if r["epochs_to_25"] is None else f"{r['epochs_to_25']:.1f}"
        at += " (diverged)" if r["diverged"] else ""
        secs = "-" if r["seconds_to_25"] is None else f"{r['seconds_to_25']:.0f}"
        factor = "-" if r["factor"] is None else \
            f"{'more than ' if r['bound'] == 'lower' else ''}{r['factor']:.1f}x"  # fmt: skip
        lines.append(f"| {a} | {r['lr']:g} | {r['epochs_run']} | {at} | {secs} | {factor} |")
    return "\n".join(lines)


def write_results(results: dict, curves: dict[str, list[dict]], out: Path, chance: float) -> None:
    from alexnet.files import write_text
    from alexnet.inference import figures

    # The figure first and results.md last, each whole: an experiment stopped while writing
    # them left a results.md whose figure was missing. A results.md has all three.
    figures.save(figure1(curves, chance), out / "figure1.png")
    write_text(out / "results.json", json.dumps(results, indent=1))
    note = (f"Budget {results['budget_minutes']:g} minutes, one seed; training error is the "
            "running error of each epoch, placed at the epoch's middle (relu_vs_tanh.py). The "
            "paper: ReLU six times faster than tanh.")  # fmt: skip
    for key, said in (("at_edge", "best rate still at an end of the rates tried"),
                      ("no_learning_in_sweep", "no rate learned anything in the sweep's "
                       "epoch, so its rate is a guess")):  # fmt: skip
        if results[key]:
            note += f" {', '.join(results[key])}: {said}."
    write_text(out / "results.md", f"# Figure 1: ReLU against tanh\n\n{results_table(results)}"
                                    f"\n\n{note}\n\n![Figure 1](figure1.png)\n")  # fmt: skip


def figure1(curves: dict[str, list[dict]], chance: float):
    """Training error against epochs, one line per activation, the 25% line dashed grey."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.subplots()
    for a, metrics in curves.items():
        xs, ys = zip(*points(metrics, chance), strict=True)
        ax.plot(xs, [100 * y for y in ys], STYLES.get(a, "-"), label=a)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(100 * TARGET, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="epochs", ylabel="training error (%)", ylim=(0, 100),
           title="Figure 1: the four-layer network on CIFAR-10")  # fmt: skip
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig

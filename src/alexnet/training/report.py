"""``report.md`` for a finished run: test accuracy, the training curves, the paper's figures
(Figure 3: conv1's kernels tower by tower; Figure 4: test images with their top-5 predictions,
and beside their nearest training images), the test set's confusion matrix, and every epoch.

The figures are those of ``alexnet figures`` (figure_data.py), drawn from the network the run
has just trained, left as it was: evaluation mode without gradients on the run's device, its
weights, precision and layout untouched."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from alexnet.data.stats import PixelStats
from alexnet.files import write_text
from alexnet.inference.trained import Trained

# Training images searched for Figure 4 right in a run's report (evenly spaced where a set has
# more): all of Fashion-MNIST's 60,000, whose features took 18 s of the figures' 24 s on a
# 2-core CPU (alexnet-small, bfloat16); a store's are read from disk, hence fewer.
MEMORY_NEIGHBOURS = 60_000


def run_network(run_dir: Path, model: nn.Module, recipe, state) -> Trained:
    """The network a run has trained, described as a checkpoint of it would be (trained.py),
    so the report sees the images as ``alexnet figures`` and ``alexnet eval`` do."""
    data = state.data
    stats = PixelStats.from_dict(state.preprocessing) if state.preprocessing else None
    return Trained(run_dir / "last.pt", model, recipe, list(data["classes"]),
                   list(data.get("names") or data["classes"]), stats,
                   data.get("stored_size"))  # fmt: skip


def figure_sections(written: dict[str, Path], neighbours_note: str) -> list[str]:
    """The report's figure sections, each linking the file written for it."""
    sections = [
        ("curves", "Training curves", "", "curves"),
        ("kernels", "First-layer kernels (cf. the paper's Figure 3)",
         "Each kernel scaled to its largest weight, zero at grey; with two towers, the kernels "
         "of each tower (GPU) in a block of their own.", "conv1 kernels"),
        ("predictions", "Test images and their top-5 predictions (cf. the paper's Figure 4, "
         "left)", "Green: the true class.", "predictions"),
        ("neighbours", "Test images and their nearest training images (cf. the paper's Figure "
         "4, right)", neighbours_note, "neighbours"),
        ("confusion", "Confusion matrix of the test set", "Rows: the true class, each divided "
         "by its images.", "confusion matrix"),
    ]  # fmt: skip
    lines: list[str] = []
    for key, heading, note, alt in sections:
        if key in written:
            lines += [f"## {heading}"] + ([note, ""] if note else [])
            lines += [f"![{alt}]({written[key].name})", ""]
    return lines


def _pct(m: dict, key: str) -> str:
    return f"{100 * m[key]:.2f}%" if key in m else "-"


def budget_lines(budget: dict[str, float], epochs: int) -> list[str]:
    """What a time budget bought, for a run that had one."""
    if not budget.get("minutes"):
        return []
    planned = budget.get("planned_epochs", epochs)
    cut = (
        f" (planned {planned:.0f}, shortened when the run fell behind)" if planned != epochs else ""
    )
    return [f"Time budget: {budget['minutes']:g} min bought {epochs} epochs{cut}; "
            f"{budget.get('spent_seconds', 0) / 60:.1f} min of wall time had passed when this "
            "report began."]  # fmt: skip


def write_report(run_dir: Path, model: nn.Module, recipe, rt, state, train_set, test_set,
                 writer=None) -> Path:  # fmt: skip
    """Write the figures (also to TensorBoard, given the run's ``SummaryWriter``) and
    ``report.md`` into ``run_dir``; returns the report's path. ``model`` is the trained
    network (unwrapped), ``state`` the run's ``TrainingState``."""
    from alexnet.inference import figure_data as fd

    metrics = state.history
    net = run_network(run_dir, model, recipe, state)
    look = fd.Looker(net, model, rt.device, rt.amp, rt.channels_last, fd.views_for(net),
                  recipe.data.eval_batch_size)  # fmt: skip
    limit = fd.STORE_NEIGHBOURS if train_set.streamed else MEMORY_NEIGHBOURS
    with fd.evaluation(model):
        data = fd.collect(look, test_set, train_set, limit)
    written = fd.write_figures(data, metrics, run_dir, writer, metrics[-1]["epoch"])
    note = f"{fd.neighbours_caption(data)}." if data.neighbours is not None else ""
    last = metrics[-1]
    best = min(metrics, key=lambda m: m["val_top1_err"])
    lines = [
        f"# Run `{run_dir.name}`",
        "",
        f"**Test accuracy: {100 * (1 - last['val_top1_err']):.2f}%** (top-1 error "
        f"{100 * last['val_top1_err']:.2f}%, top-5 error {100 * last['val_top5_err']:.2f}%) after "
        f"{last['epoch']} epochs and {last['train_seconds']:.0f} s of training "
        f"({last['images_per_s']:.0f} images/s in the last epoch).",
        f"Best epoch: {best['epoch']} ({100 * (1 - best['val_top1_err']):.2f}%).",
        *budget_lines(state.budget, last["epoch"]),
        "",
        *figure_sections(written, note),
        "## Epochs",
        "| epoch | train loss | train top-1 err | train top-5 err | test loss | test top-1 err "
        "| test top-5 err | lr | s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in metrics:
        lines.append(
            f"| {m['epoch']} | {m['train_loss']:.4f} | {_pct(m, 'train_top1_err')} "
            f"| {_pct(m, 'train_top5_err')} | {m['val_loss']:.4f} | {_pct(m, 'val_top1_err')} "
            f"| {_pct(m, 'val_top5_err')} | {m['lr']:.4g} | {m['epoch_seconds']:.1f} |"
        )
    lines += ["", "## Recipe", "```toml", recipe.to_toml().strip(), "```", ""]
    path = run_dir / "report.md"
    write_text(path, "\n".join(lines))  # whole, and over a link rather than through it
    return path

"""The paper's figures, drawn from plain tensors and lists: Figure 3 (conv1's kernels, tower by
tower), Figure 4 left (test images and their top-5 predictions), Figure 4 right (test images
and their nearest training images in the last hidden layer's space), the training curves and
the confusion matrix.

Each figure is a ``matplotlib.figure.Figure`` made without pyplot (no global state, no
display: the Agg canvas draws it), so the training process and the tests can make them
anywhere; ``save`` writes one as a PNG and logs it to TensorBoard. What the figures show is
computed from a network in ``figure_data.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from alexnet.files import written

DPI = 100
KERNEL_PIXELS = 48  # a kernel is drawn at least about this many pixels wide: 11x11 x5, 5x5 x10
KERNEL_GAP = 2  # pixels between kernels
COLUMNS = 16  # kernels per row of a block, as the paper's Figure 3 has them
RIGHT, WRONG, OTHER = "tab:green", "tab:red", "tab:gray"


@dataclass(frozen=True)
class Block:
    """One tower's kernels in the grid image: which kernels, where, and at what size."""

    label: str
    first: int  # index of the block's first kernel in conv1
    count: int
    top: int  # pixel box in the grid image
    left: int
    height: int
    width: int
    kernel_pixels: int  # the side of one kernel as drawn


def kernel_grid(weight: torch.Tensor, towers: int = 1) -> tuple[torch.Tensor, list[Block]]:
    """conv1's kernels (out, in, k, k) as one RGB image (3, H, W) in [0, 1] and its blocks.

    Each kernel is scaled by its own largest absolute weight and centred on grey
    (``w / (2 max|w|) + 0.5``), so zero is grey and the colours keep their relations (what
    tells the colour-specific kernels from the colour-agnostic ones); three-channel kernels
    are drawn in colour, any other in grey (their first channel). Each kernel is enlarged by
    nearest-neighbour repetition to about ``KERNEL_PIXELS`` so it can be read. With two
    towers the first half of the kernels (those conv2's first group sees: "GPU 1") forms the
    first block and the second half the second, stacked as in the paper."""
    w = weight.detach().float().cpu()
    w = w if w.shape[1] == 3 else w[:, :1].expand(-1, 3, -1, -1)
    w = w / (2 * w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)) + 0.5
    scale = max(1, math.ceil(KERNEL_PIXELS / w.shape[-1]))
    w = w.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    side = w.shape[-1]
    towers = towers if towers > 1 and len(w) % towers == 0 else 1
    per = len(w) // towers
    cols = min(per, COLUMNS)
    rows = math.ceil(per / cols)
    step = side + KERNEL_GAP
    block_h, width = rows * step - KERNEL_GAP, cols * step - KERNEL_GAP
    gap = 4 * KERNEL_GAP  # between blocks
    image = torch.ones(3, towers * block_h + (towers - 1) * gap, width)
    blocks = []
    for t in range(towers):
        top = t * (block_h + gap)
        for j in range(per):
            y, x = top + (j // cols) * step, (j % cols) * step
            image[:, y : y + side, x : x + side] = w[t * per + j]
        label = f"tower {t + 1} (GPU {t + 1})" if towers > 1 else "one tower"
        blocks.append(Block(label, t * per, per, top, 0, block_h, width, side))
    return image, blocks


def kernels_figure(weight: torch.Tensor, towers: int = 1, title: str = "") -> Figure:
    """Figure 3: the grid of ``kernel_grid`` drawn pixel for pixel, each block under its label."""
    image, blocks = kernel_grid(weight, towers)
    out, c, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    title = title or f"conv1: {out} kernels of {k}x{k}x{c} (cf. the paper's Figure 3)"
    margin, head, label = 12, 34, 22  # pixels
    width = max(image.shape[2] + 2 * margin, 7 * len(title) + 2 * margin)
    height = head + sum(label + b.height for b in blocks) + margin
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.suptitle(title, y=1 - 8 / height, va="top", fontsize=10)
    y = height - head
    for b in blocks:
        y -= label + b.height
        rect = (margin / width, y / height, b.width / width, b.height / height)
        ax = fig.add_axes(rect)
        crop = image[:, b.top : b.top + b.height, b.left : b.left + b.width]
        ax.imshow(crop.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{b.label}: kernels {b.first + 1}-{b.first + b.count}", fontsize=9,
                     loc="left", pad=3)  # fmt: skip
        ax.axis("off")
    return fig


def _show(ax, image: torch.Tensor) -> None:
    """A uint8 (C, H, W) image on ``ax``, grey for one channel, pixels kept sharp."""
    pixels = image.permute(1, 2, 0).squeeze(-1).numpy()
    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _short(name: str, length: int = 24) -> str:
    return name if len(name) <= length else name[: length - 1] + "…"


def predictions_figure(images: torch.Tensor, probs: torch.Tensor, labels: Sequence[int],
                       names: Sequence[str], title: str = "") -> Figure:  # fmt: skip
    """Figure 4, left: each test image over the bars of its five most probable classes; the
    true class's bar is green (red for the others), and the image's title names the true
    class, in green where the network's first guess is right."""
    n, cols = len(images), min(4, len(images))
    rows = math.ceil(n / cols)
    top = min(5, probs.shape[1])
    height = rows * 3.2 + 0.8
    fig = Figure(figsize=(cols * 2.6 + 0.6, height), dpi=DPI)
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[1.6, 1] * rows, hspace=0.45,
                            wspace=0.75, left=0.1, right=0.98, top=1 - 0.75 / height,
                            bottom=0.03)  # fmt: skip
    most = "five" if top == 5 else str(top)
    title = title or (f"Test images and the network's {most} most probable classes (cf. the "
                      "paper's Figure 4, left; green: the true class)")  # fmt: skip
    fig.suptitle(title, fontsize=10)
    for i in range(n):
        r, c = divmod(i, cols)
        truth = int(labels[i])
        p, idx = probs[i].topk(top)
        ax = fig.add_subplot(grid[2 * r, c])
        _show(ax, images[i])
        ax.set_title(_short(names[truth]), fontsize=8, color=RIGHT if idx[0] == truth else "k")
        bars = fig.add_subplot(grid[2 * r + 1, c])
        colours = [RIGHT if j == truth else WRONG for j in idx.tolist()]
        bars.barh(range(top), p.tolist(), color=colours)
        bars.set_yticks(range(top), [_short(names[j], 18) for j in idx.tolist()], fontsize=7)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=6)
    return fig


def neighbours_figure(queries: torch.Tensor, neighbours: torch.Tensor, query_labels: Sequence[int],
                      neighbour_labels: torch.Tensor, names: Sequence[str],
                      title: str) -> Figure:  # fmt: skip
    """Figure 4, right: each test image (first column) beside the training images nearest to
    it in the last hidden layer's space, nearest first; a neighbour's class is named above
    it, in green where it is the test image's."""
    n, k = neighbours.shape[:2]
    header = 0.35 + 0.17 * (title.count("\n") + 1)  # inches: the title's lines and a gap
    height = 1.55 * n + header
    fig = Figure(figsize=(1.45 * (k + 1) + 0.3, height), dpi=DPI)
    space = {"left": 0.02, "right": 0.98, "bottom": 0.02, "top": 1 - header / height,
             "hspace": 0.35}  # fmt: skip
    axes = fig.subplots(n, k + 1, squeeze=False, gridspec_kw=space)
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    for r in range(n):
        truth = int(query_labels[r])
        _show(axes[r, 0], queries[r])
        axes[r, 0].set_title(_short(names[truth], 18), fontsize=7, fontweight="bold")
        axes[r, 0].set_ylabel("test image" if r == 0 else "", fontsize=7)
        for j in range(k):
            ax = axes[r, j + 1]
            _show(ax, neighbours[r, j])
            label = int(neighbour_labels[r, j])
            ax.set_title(_short(names[label], 18), fontsize=7,
                         color=RIGHT if label == truth else OTHER)  # fmt: skip
    return fig


CURVES = (("loss", "loss", 1.0), ("top-1 error (%)", "top1_err", 100.0),
          ("top-5 error (%)", "top5_err", 100.0))  # fmt: skip


def curves_figure(metrics: Sequence[dict]) -> Figure:
    """Loss, top-1 and top-5 error per epoch, training against the held-out set; a metric the run
    did not record (training top-5 error before it was tracked) is left out."""
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(12, 3.6), dpi=DPI)
    axes = fig.subplots(1, len(CURVES))
    for ax, (title, key, factor) in zip(axes, CURVES, strict=True):
        # "held out": the split each run evaluates on (ImageNet's val, Fashion-MNIST's test)
        for split, name in (("train", "training"), ("val", "held-out set")):
            values = [m.get(f"{split}_{key}") for m in metrics]
            if all(v is not None for v in values):
                ax.plot(epochs, [factor * v for v in values], "o-", markersize=3, label=name)
        ax.set(xlabel="epoch", title=title)
        if len(epochs) < 8:  # the locator alone puts fractional ticks around a single epoch
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


LABELLED_CLASSES = 30  # more classes: a heat map without names, the most confused pairs listed
LISTED_PAIRS = 20


def confused_pairs(matrix: torch.Tensor, count: int = LISTED_PAIRS) -> list[tuple[int, int, int]]:
    """The ``count`` largest off-diagonal cells as (true class, predicted class, images)."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(min(count, off.numel()))
    k = matrix.shape[1]
    return [(i // k, i % k, v) for v, i in zip(values.tolist(), flat.tolist(), strict=True) if v]


def confusion_figure(matrix: torch.Tensor, names: Sequence[str]) -> Figure:
    """The test set's confusion matrix, each row (a true class) divided by its images; class
    names on the axes for up to ``LABELLED_CLASSES`` classes, else the most confused pairs
    listed beside the map."""
    k = matrix.shape[0]
    rows = matrix.sum(1, keepdim=True).clamp_min(1)
    rates = (matrix / rows).numpy()
    labelled = k <= LABELLED_CLASSES
    side = min(12.0, max(4.5, 0.32 * k + 2.5)) if labelled else 7.0
    fig = Figure(figsize=(side + (0 if labelled else 5.5), side), dpi=DPI)
    ax = fig.add_subplot(1, 1 if labelled else 2, 1)
    smooth = "nearest" if labelled else "antialiased"  # thousands of cells in fewer pixels
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation=smooth)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    which = "" if labelled else " (index)"
    ax.set(xlabel=f"predicted class{which}", ylabel=f"true class{which}")
    ax.set_title(f"Confusion matrix of {int(matrix.sum()):,} test images", fontsize=10)
    if labelled:
        short = [_short(n, 20) for n in names]
        ax.set_xticks(range(k), short, rotation=90, fontsize=7)
        ax.set_yticks(range(k), short, fontsize=7)
        if k <= 12:
            for (i, j), v in np.ndenumerate(rates):
                if round(100 * v) >= 1:
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.5 else "black")  # fmt: skip
    else:
        text = fig.add_subplot(1, 2, 2)
        text.axis("off")
        lines = [f"{_short(names[i], 26)} → {_short(names[j], 26)}: {v} "
                 f"({100 * v / float(rows[i]):.0f}%)"
                 for i, j, v in confused_pairs(matrix)]  # fmt: skip
        text.text(0, 1, "Most confused (true → predicted: images)\n\n" + "\n".join(lines),
                  va="top", fontsize=8, family="monospace")  # fmt: skip
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path, writer=None, tag: str = "", step: int = 0) -> Path:
    """Write ``fig`` as a PNG at ``path`` and, given a ``SummaryWriter``, log it under ``tag``
    (TensorBoard's images tab); the figure is closed."""
    with written(path) as tmp:  # a full disk leaves no empty PNG behind
        fig.savefig(tmp, dpi=DPI)
    if writer is not None:
        writer.add_figure(tag or path.stem, fig, step, close=True)
    return path

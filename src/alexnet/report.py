"""``report.md`` for a finished run: test accuracy, training curves, the first layer's kernels
(the paper's Figure 3) and test images with their top predictions (the paper's Figure 4, left)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def first_layer_grid(model: nn.Module) -> torch.Tensor:
    """conv1's kernels as one image (3, H, W), each kernel scaled to [0, 1] on its own."""
    from torchvision.utils import make_grid

    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    w = conv.weight.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        w = w[:, :1]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    nrow = 16 if w.shape[0] >= 64 else 8
    return make_grid(w, nrow=nrow, padding=1, pad_value=1.0)


def _plot_curves(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in metrics]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    ax1.plot(epochs, [m["val_loss"] for m in metrics], "o-", label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [100 * m["train_top1_err"] for m in metrics], "o-", label="train top-1")
    ax2.plot(epochs, [100 * m["val_top1_err"] for m in metrics], "o-", label="test top-1")
    ax2.plot(epochs, [100 * m["val_top5_err"] for m in metrics], "o-", label="test top-5")
    ax2.set(xlabel="epoch", ylabel="error (%)", title="error rate")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_predictions(model, loader, chosen, classes, recipe, rt, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alexnet.evaluate import predict_logits

    model.eval()
    images, x, labels = loader.examples(chosen)  # preprocessed as the test set is evaluated
    labels = labels.tolist()
    with torch.no_grad():  # the inference path of the reported accuracy: autocast, flip TTA
        probs = predict_logits(model, x, rt.amp, recipe.eval.tta_flip).softmax(1).cpu()
    top = probs.topk(min(3, probs.shape[1]), dim=1)
    n = len(images)
    cols = 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols * 2, figsize=(cols * 4.2, rows * 1.7))
    for i in range(rows * cols):
        ax_img, ax_bar = axes.flat[2 * i], axes.flat[2 * i + 1]
        ax_img.axis("off")
        if i >= n:
            ax_bar.axis("off")
            continue
        img = images[i].permute(1, 2, 0).squeeze(-1).numpy()
        ax_img.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax_img.set_title(classes[labels[i]], fontsize=8)
        names = [classes[j] for j in top.indices[i].tolist()][::-1]
        values = top.values[i].tolist()[::-1]
        colours = ["tab:green" if classes[labels[i]] == nm else "tab:gray" for nm in names]
        ax_bar.barh(range(len(names)), values, color=colours)
        ax_bar.set_yticks(range(len(names)), names, fontsize=7)
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    run_dir: Path, model: nn.Module, test_loader, recipe, rt, metrics: list[dict]
) -> Path:
    """Write the figures and ``report.md`` into ``run_dir``; returns the report's path."""
    from torchvision.utils import save_image

    recipe_text = recipe.to_toml()
    _plot_curves(metrics, run_dir / "curves.png")
    save_image(first_layer_grid(model), run_dir / "conv1_kernels.png")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(test_loader.data), generator=g)[:16]
    _plot_predictions(model, test_loader, pick, test_loader.data.classes, recipe, rt,
                      run_dir / "predictions.png")  # fmt: skip
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
        "",
        "## Training curves",
        "![curves](curves.png)",
        "",
        "## First-layer kernels (cf. the paper's Figure 3)",
        "![conv1 kernels](conv1_kernels.png)",
        "",
        "## Test images and their top predictions (cf. the paper's Figure 4, left)",
        "Green: the true class.",
        "",
        "![predictions](predictions.png)",
        "",
        "## Epochs",
        "| epoch | train loss | train top-1 err | test loss | test top-1 err | test top-5 err | lr | s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in metrics:
        lines.append(
            f"| {m['epoch']} | {m['train_loss']:.4f} | {100 * m['train_top1_err']:.2f}% | {m['val_loss']:.4f} "
            f"| {100 * m['val_top1_err']:.2f}% | {100 * m['val_top5_err']:.2f}% | {m['lr']:.4g} | {m['epoch_seconds']:.1f} |"
        )
    lines += ["", "## Recipe", "```toml", recipe_text.strip(), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path

"""Top-1 and top-5 error, the paper's two figures of merit, over a whole test set."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from alexnet.runtime import autocast


def predict_logits(
    model: nn.Module, x: torch.Tensor, amp: torch.dtype | None, tta_flip: bool
) -> torch.Tensor:
    """Logits for a batch; with ``tta_flip`` the average over the image and its mirror image
    (the small-image form of the paper's test-time averaging over crops and reflections)."""
    with autocast(x.device, amp):
        logits = model(x).float()
        if tta_flip:
            logits = (logits + model(x.flip(-1)).float()) / 2
    return logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    criterion: nn.Module,
    amp: torch.dtype | None = None,
    tta_flip: bool = False,
    distributed: bool = False,
) -> dict[str, float]:
    """Mean loss, top-1 and top-5 error; under DDP summed over every rank's shard."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top-1 correct, top-5 correct, count
    for x, y, valid in loader:
        logits = predict_logits(model, x, amp, tta_flip)
        losses = nn.functional.cross_entropy(
            logits, y, reduction="none", label_smoothing=getattr(criterion, "label_smoothing", 0.0)
        )
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top5 == y[:, None]
        valid = valid.to(torch.float64)
        sums += torch.stack(
            [
                (losses.double() * valid).sum(),
                (hit[:, 0].double() * valid).sum(),
                (hit.any(1).double() * valid).sum(),
                valid.sum(),
            ]
        ).cpu()
    if distributed:
        sums = sums.to(next(model.parameters()).device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    model.train(was_training)
    loss, top1, top5, count = sums.tolist()
    count = max(count, 1.0)
    return {
        "loss": loss / count,
        "top1_err": 1 - top1 / count,
        "top5_err": 1 - top5 / count,
        "count": count,
    }

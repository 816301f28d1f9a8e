"""Augmentations as operations on whole uint8 batches, on the CPU or on CUDA.

Each takes a batch (N, C, H, W) and a ``torch.Generator`` and returns a batch, so the
randomness of a step is a pure function of the generator's seed: a resumed run draws exactly
the crops and flips the uninterrupted run would have drawn. Per-image Python loops are avoided:
a random crop of a padded batch is done as one masked copy per distinct offset, which for
padding p is (2p+1)^2 vectorised copies, whatever the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``padding`` pixels, zero-filled: pad, then crop back."""
    if padding <= 0:
        return batch
    n, _, h, w = batch.shape
    padded = F.pad(batch, (padding, padding, padding, padding))
    offsets = torch.randint(
        0, 2 * padding + 1, (2, n), generator=generator, device=generator.device
    )
    offsets = offsets.to(batch.device)
    out = torch.empty_like(batch)
    codes = offsets[0] * (2 * padding + 1) + offsets[1]
    for code in codes.unique().tolist():
        dy, dx = divmod(code, 2 * padding + 1)
        chosen = codes == code
        out[chosen] = padded[chosen, :, dy : dy + h, dx : dx + w]
    return out


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(batch.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(batch.device).view(-1, 1, 1, 1)
    return torch.where(flip, batch.flip(-1), batch)


def normalise(
    batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """uint8 -> float32 ``(x / 255 - mean) / std`` per channel."""
    x = batch.float().div_(255.0).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class BatchAugment:
    """The training augmentation of a recipe: random crop with padding, then random flip."""

    def __init__(self, crop_padding: int = 0, flip: bool = False) -> None:
        self.crop_padding, self.flip = crop_padding, flip

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch = random_crop(batch, self.crop_padding, generator)
        if self.flip:
            batch = random_flip(batch, generator)
        return batch

    def __repr__(self) -> str:
        return f"BatchAugment(crop_padding={self.crop_padding}, flip={self.flip})"

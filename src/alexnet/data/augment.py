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


def crop_offsets(
    n: int, full: int, size: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners (ys, xs) of ``size`` crops of ``full``-pixel square images: uniform
    over every position with a generator (the paper's random 227 crops of 256: 30 x 30
    positions), the centre without one (evaluation)."""
    if generator is None:
        centre = torch.full((n,), (full - size) // 2, dtype=torch.int64)
        return centre, centre.clone()
    corners = torch.randint(0, full - size + 1, (2, n), generator=generator)
    return corners[0], corners[1]


def flip_draws(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Which images to mirror left-right: each with probability 1/2; none without a generator."""
    if generator is None:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=generator) < 0.5


def pca_shift(
    n: int, eigval: torch.Tensor, eigvec: torch.Tensor, alpha_std: float,
    generator: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """The paper's colour augmentation (section 4.1): per image, ``sum_i alpha_i lambda_i p_i``
    with alpha_i ~ N(0, alpha_std), as an (n, C) shift in the units of the eigenvalues
    (stats.py: [0, 1] pixels). Fresh alphas per image per use, as the paper draws them."""
    alphas = torch.randn(n, len(eigval), generator=generator) * alpha_std
    return (alphas * eigval) @ eigvec.T


def normalise(
    batch: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    channels_last: bool = False,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 -> float32 ``(x / 255 + shift - mean) / std``: ``mean`` per channel (C,) or a
    mean image (C, H, W), in [0, 1] units; ``shift`` (N, C) the PCA colour noise, if any."""
    mean = mean.view(1, -1, 1, 1) if mean.dim() == 1 else mean[None]
    x = batch.float().div_(255.0).sub_(mean)
    if shift is not None:
        x.add_(shift.to(x.device)[:, :, None, None])
    x.div_(std.view(1, -1, 1, 1))
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

"""The training set's pixel statistics that the paper's preprocessing needs (sections 2, 4.1).

- The mean image: the per-pixel mean over the training set, subtracted from every input
  ("we did not pre-process the images in any other way, except for subtracting the mean
  activity over the training set from each pixel").
- The PCA of RGB values: eigenvalues and eigenvectors of the 3x3 covariance of every training
  pixel, for the colour augmentation that adds ``sum_i alpha_i * lambda_i * p_i`` to each
  pixel of an image, alpha_i ~ N(0, 0.1) drawn per image per use.

The paper gives no unit for lambda_i. Here pixels are on the [0, 1] scale when the covariance
is taken (the convention of the widely used reimplementations), so the shift is in [0, 1]
units too: on the 1,000 ILSVRC images of the shared sample the largest eigenvalue is 0.20, so
an alpha of one standard deviation (0.1) moves an image's colour by 0.02, about 5 of 255 grey
levels, along the principal (brightness) axis.

Sums are kept in float64 and merge exactly across chunks, so statistics gathered in parallel
by ``alexnet prepare`` equal those of one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alexnet.errors import UserError


@dataclass
class PixelSums:
    """Running sums over uint8 images (N, H, W, C): enough for the mean image and the PCA."""

    images: int = 0
    image_sum: torch.Tensor | None = None  # (H, W, C) float64, pixel units
    pixel_sum: torch.Tensor | None = None  # (C,) float64, [0, 1] units
    pixel_outer: torch.Tensor | None = None  # (C, C) float64, [0, 1] units

    def add(self, batch: torch.Tensor) -> None:
        """Add a uint8 batch (N, H, W, C); every image must have the first batch's shape."""
        if batch.numel() == 0:
            return
        x = batch.reshape(-1, batch.shape[-1]).double().div_(255.0)
        image_sum = batch.double().sum(0)
        if self.image_sum is None:
            c = batch.shape[-1]
            self.image_sum = torch.zeros_like(image_sum)
            self.pixel_sum = torch.zeros(c, dtype=torch.float64)
            self.pixel_outer = torch.zeros(c, c, dtype=torch.float64)
        elif image_sum.shape != self.image_sum.shape:
            raise ValueError(f"image shape {tuple(image_sum.shape)} differs from "
                             f"{tuple(self.image_sum.shape)}")  # fmt: skip
        self.images += batch.shape[0]
        self.image_sum += image_sum
        self.pixel_sum += x.sum(0)
        self.pixel_outer += x.T @ x

    def merge(self, other: PixelSums) -> None:
        if other.image_sum is None:
            return
        if self.image_sum is None:
            self.images, self.image_sum = other.images, other.image_sum.clone()
            self.pixel_sum, self.pixel_outer = other.pixel_sum.clone(), other.pixel_outer.clone()
            return
        self.images += other.images
        self.image_sum += other.image_sum
        self.pixel_sum += other.pixel_sum
        self.pixel_outer += other.pixel_outer

    def to_dict(self) -> dict:
        return {"images": self.images, "image_sum": self.image_sum,
                "pixel_sum": self.pixel_sum, "pixel_outer": self.pixel_outer}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> PixelSums:
        return cls(int(d["images"]), d["image_sum"], d["pixel_sum"], d["pixel_outer"])

    def finish(self) -> PixelStats:
        if self.image_sum is None or self.images == 0:
            raise ValueError("no images to compute statistics from")
        pixels = self.images * self.image_sum.shape[0] * self.image_sum.shape[1]
        mean = self.pixel_sum / pixels
        covariance = self.pixel_outer / pixels - torch.outer(mean, mean)
        eigval, eigvec = torch.linalg.eigh(covariance)  # ascending; the paper's p_1 is largest
        return PixelStats(
            mean_image=(self.image_sum / self.images).float(),
            eigval=eigval.flip(0).clamp_min(0).float(),
            eigvec=eigvec.flip(1).float(),
            channel_mean=mean.float(),
            channel_std=covariance.diagonal().clamp_min(0).sqrt().float(),
            images=self.images,
        )


@dataclass
class PixelStats:
    """The finished statistics; they travel with the run and with every checkpoint."""

    mean_image: torch.Tensor  # (H, W, C) float32, pixel units [0, 255]
    eigval: torch.Tensor  # (C,) descending, [0, 1] units squared
    eigvec: torch.Tensor  # (C, C), column i the eigenvector of eigval[i]
    channel_mean: torch.Tensor  # (C,) [0, 1] units
    channel_std: torch.Tensor  # (C,) [0, 1] units
    images: int  # how many images they were computed from

    def to_dict(self) -> dict:
        return {"mean_image": self.mean_image, "eigval": self.eigval, "eigvec": self.eigvec,
                "channel_mean": self.channel_mean, "channel_std": self.channel_std,
                "images": self.images}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> PixelStats:
        """The statistics saved by :meth:`to_dict`; a ValueError names what is missing or
        misshapen (an edited file gave a KeyError traceback, or was used silently)."""
        keys = ("mean_image", "eigval", "eigvec", "channel_mean", "channel_std")
        if not isinstance(d, dict):
            raise UserError(f"they are a {type(d).__name__}, not a record of statistics")
        missing = [k for k in (*keys, "images") if k not in d]
        if missing:
            raise UserError(f"no {missing[0]}")
        bad = [
            k for k in keys if not isinstance(d[k], torch.Tensor) or not d[k].is_floating_point()
        ]
        if bad:
            raise UserError(f"{bad[0]} is not a float tensor")
        c = d["mean_image"].shape[-1] if d["mean_image"].dim() == 3 else -1
        if c not in (1, 3):
            raise UserError("mean_image is not an (H, W, C) image of 1 or 3 channels")
        shapes = {"eigval": (c,), "eigvec": (c, c), "channel_mean": (c,), "channel_std": (c,)}
        wrong = [k for k, shape in shapes.items() if tuple(d[k].shape) != shape]
        if wrong:
            raise UserError(f"{wrong[0]} has the wrong shape")
        broken = [k for k in keys if not d[k].isfinite().all()]
        if broken:
            raise UserError(f"{broken[0]} holds NaN or infinite values")
        # The ranges pixels give (an edited mean image of 1e30 predicted NaN without a word; a
        # negative eigenvalue, no variance at all, diverged as if the rate were too high).
        ranges = {"mean_image": 255.0, "eigval": 1.0, "eigvec": 1.0 + 1e-4, "channel_mean": 1.0,
                  "channel_std": 1.0}  # fmt: skip
        low = {"eigvec": -ranges["eigvec"]}
        out = [k for k, top in ranges.items()
               if d[k].min() < low.get(k, -1e-4) or d[k].max() > top + 1e-4]  # fmt: skip
        if out:
            raise UserError(f"{out[0]} holds values outside {low.get(out[0], 0):g} to "
                            f"{ranges[out[0]]:g}, which no image gives")  # fmt: skip
        if type(d["images"]) is not int or d["images"] < 1:
            raise UserError(f"its image count {d['images']!r} is not a count")
        return cls(**{k: d[k] for k in (*keys, "images")})

    def same_as(self, other: PixelStats) -> bool:
        return self.images == other.images and all(
            torch.equal(a, b) for a, b in zip(self.to_dict().values(), other.to_dict().values(),
                                              strict=True) if isinstance(a, torch.Tensor)
        )  # fmt: skip


def image_stats(images: torch.Tensor, chunk: int = 1024) -> PixelStats:
    """The statistics of an in-memory uint8 set (N, C, H, W), in chunks to bound memory."""
    sums = PixelSums()
    for start in range(0, len(images), chunk):
        sums.add(images[start : start + chunk].permute(0, 2, 3, 1))
    return sums.finish()

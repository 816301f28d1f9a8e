"""How a batch is made from chosen images: ``read`` (uint8 work and random draws, in a loader
worker) and ``finish`` (float conversion and normalisation, on the run's device).

Both makers draw every random number of a batch from the batch's own generator, in a fixed
order, so a batch depends only on (seed, epoch, batch index, rank): resumed runs and any
number of loader workers see exactly the same batches.

- :class:`MemoryBatches`: an in-memory :class:`ImageSet` at the network's size (Fashion-MNIST,
  CIFAR-10, image folders): padded random crops and flips on uint8, then normalised.
- :class:`StoreBatches`: a prepared store of 256x256 images (store.py), the paper's ImageNet
  preprocessing: a random 227x227 crop (or the centre one), a horizontal flip, the mean image
  subtracted at the crop's position and PCA colour noise added, as batch tensor operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from alexnet.data.augment import BatchAugment, crop_offsets, flip_draws, normalise, pca_shift
from alexnet.data.imageset import ImageSet
from alexnet.data.store import StoreSplit
from alexnet.errors import UserError

# What ``read`` hands to ``finish``: a tuple of tensors only, so that workers can send it. Its
# layout is each batch maker's own, built and taken apart only inside its class (also for the
# test views, ``view``), never by a caller.
Raw = tuple


class Batches(Protocol):
    def read(
        self, chosen: torch.Tensor, generator: torch.Generator | None, out: torch.Tensor | None
    ) -> Raw: ...

    def finish(
        self, raw: Raw, device: torch.device, channels_last: bool
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def display(self, chosen: torch.Tensor) -> torch.Tensor: ...

    def view(self, images: torch.Tensor, view: tuple[int, int, bool], device: torch.device,
             channels_last: bool) -> torch.Tensor: ...  # fmt: skip


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``. For CUDA through pinned (page-locked) memory, so that the copy is
    asynchronous. A plain ``.to("cuda")`` from pageable memory, however small the tensor,
    waits for everything queued on the GPU to finish (PyTorch synchronises the stream after
    such a copy): the host can then queue the next step only once the GPU has run dry."""
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def constant_on(owner: object, device: torch.device, name: str, make) -> torch.Tensor:
    """``make()``, a constant of ``owner``'s batch arithmetic, on ``device``: copied there
    once and kept in ``owner``, not copied again for every batch. On CUDA the stream that
    uses it waits for its copy (an event, no wait on the host): the loader finishes batches
    on a stream of its own, evaluation's views on the compute stream, and the constant is
    copied on whichever came first."""
    cache = owner.__dict__.setdefault("_device_copies", {})
    key = (str(device), name)
    if key not in cache:
        made = to_device(make(), device)
        copied = torch.cuda.Event() if made.is_cuda else None
        if copied is not None:
            copied.record()
        cache[key] = made, copied
    made, copied = cache[key]
    if copied is not None:
        torch.cuda.current_stream(made.device).wait_event(copied)
    return made


def batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty uint8 tensor; in a loader worker, made in shared memory, where the batch goes
    anyway to reach the training process: that saves copying it there, and keeps the worker's
    heap from filling with the holes that batches moved out of it leave (with malloc as it
    is, a process and two workers streaming a 6 GB store reached 1.75 GB of anonymous memory
    in some runs; with this, 0.54 GB in every run, bench/loader.py)."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


@dataclass
class PCA:
    """The colour augmentation's statistics and scale (stats.py, augment.pca_shift)."""

    eigval: torch.Tensor
    eigvec: torch.Tensor
    alpha_std: float

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return pca_shift(n, self.eigval, self.eigvec, self.alpha_std, generator)


@dataclass
class MemoryBatches:
    data: ImageSet
    mean: torch.Tensor  # (C,) per channel, or (C, H, W) the mean image; [0, 1] units
    std: torch.Tensor  # (C,)
    augment: BatchAugment | None = None
    pca: PCA | None = None

    def read(self, chosen: torch.Tensor, generator: torch.Generator | None,
             out: torch.Tensor | None = None) -> Raw:  # fmt: skip
        """``out`` is unused: a gather from memory makes its own tensor."""
        images, labels = self.data.images[chosen], self.data.labels[chosen]
        shift = torch.empty(0)
        if generator is not None:
            if self.augment is not None:
                images = self.augment(images, generator)
            if self.pca is not None:
                shift = self.pca.draw(len(chosen), generator)
        return images, labels, shift

    def view(self, images: torch.Tensor, view: tuple[int, int, bool], device: torch.device,
             channels_last: bool) -> torch.Tensor:  # fmt: skip
        """The network's input for one test view (crops.py) of stored images: in memory they
        are the network's size already, so a view only mirrors."""
        batch = images.flip(-1) if view[2] else images
        raw = (batch, torch.zeros(len(images), dtype=torch.int64), torch.empty(0))
        return self.finish(raw, device, channels_last)[0]

    def finish(self, raw: Raw, device: torch.device, channels_last: bool):
        images, labels, shift = raw
        mean = constant_on(self, device, "mean", lambda: self.mean)
        std = constant_on(self, device, "std", lambda: self.std)
        shift = to_device(shift, device) if shift.numel() else None
        x = normalise(to_device(images, device), mean, std, channels_last, shift)
        return x, to_device(labels, device)

    def display(self, chosen: torch.Tensor) -> torch.Tensor:
        return self.data.images[chosen]


@dataclass
class StoreBatches:
    split: StoreSplit
    size: int  # the crop: 227 (the paper) or 224
    mean: torch.Tensor  # (C,) per channel, or (H, W, C) the mean image; [0, 1] units
    std: torch.Tensor  # (C,)
    flip: bool = True
    pca: PCA | None = None

    def __post_init__(self) -> None:
        if not 0 < self.size <= self.split.size:
            raise UserError(f"data.image_size {self.size} must be at most the store's "
                             f"{self.split.size}")  # fmt: skip

    def read_shape(self, n: int) -> tuple[int, ...]:
        """The uint8 crops of ``n`` images: what ``read`` writes into ``out``."""
        return (n, self.size, self.size, self.split.channels)

    def read(self, chosen: torch.Tensor, generator: torch.Generator | None,
             out: torch.Tensor | None = None) -> Raw:  # fmt: skip
        """The crops go into ``out`` (a loader's reused shared buffer, loader.py) when given."""
        n, s = len(chosen), self.size
        ys, xs = crop_offsets(n, self.split.size, s, generator)
        flips = flip_draws(n, generator if self.flip else None)
        shift = self.pca.draw(n, generator) if self.pca and generator else torch.empty(0)
        crops = out[:n] if out is not None else batch_buffer(self.read_shape(n))
        # One read per image (a band of rows of the stored image), cropped and mirrored as it
        # is copied into the batch: no decode and no float work per image.
        for k, (i, y, x, f) in enumerate(zip(chosen.tolist(), ys.tolist(), xs.tolist(),
                                             flips.tolist(), strict=True)):  # fmt: skip
            band = self.split.read_band(i, y, s)[:, x : x + s]
            crops[k] = band.flip(1) if f else band
        return crops, self.split.labels[chosen], ys, xs, flips, shift

    def view(self, images: torch.Tensor, view: tuple[int, int, bool], device: torch.device,
             channels_last: bool) -> torch.Tensor:  # fmt: skip
        """The network's input for one test view (crops.py) of stored images (N, H, W, C): the
        crop at (top, left), mirrored where the view says."""
        (y, x, mirrored), n, s = view, len(images), self.size
        crops = images[:, y : y + s, x : x + s]
        crops = (crops.flip(2) if mirrored else crops).contiguous()
        at = (torch.full((n,), y), torch.full((n,), x), torch.full((n,), mirrored))
        raw = (crops, torch.zeros(n, dtype=torch.int64), *at, torch.empty(0))
        return self.finish(raw, device, channels_last)[0]

    def finish(self, raw: Raw, device: torch.device, channels_last: bool):
        """``(crop - mean + shift) / std`` in [0, 1] units, i.e. ``crop * a + b`` with
        ``a = 1 / (255 std)`` and ``b = (shift - mean) / std``."""
        crops, labels, ys, xs, flips, shift = raw
        if device.type == "cpu":
            shift = shift if shift.numel() else torch.zeros(len(crops), self.split.channels)
            x = self._finish_cpu(crops, ys, xs, flips, shift)
        else:
            x = to_device(crops, device).float().mul_(self._on(device, "scale"))
            x.add_(self._offsets(ys, xs, flips, device))
            if shift.numel():
                x.add_((to_device(shift, device) / self._on(device, "std"))[:, None, None, :])
        x = x.permute(0, 3, 1, 2)  # (N, C, H, W) in channels-last memory, as stored
        return (x if channels_last else x.contiguous()), to_device(labels, device)

    def _scale(self, device) -> torch.Tensor:
        return (1.0 / (255.0 * self.std)).to(device)

    def _on(self, device, what: str) -> torch.Tensor:
        make = {"scale": lambda: self._scale("cpu"), "std": lambda: self.std,
                "neg": lambda: self._scaled_mean()[0]}[what]  # fmt: skip
        return constant_on(self, device, what, make)

    def _scaled_mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-mean / std at every stored pixel (H, W, C), and its mirror image; a per-channel
        mean is spread over every pixel. Computed once."""
        if self.__dict__.get("_neg") is None:
            side = self.split.size
            mean = self.mean.expand(side, side, -1) if self.mean.dim() == 1 else self.mean
            neg = (-mean / self.std).contiguous()
            self._neg = (neg, neg.flip(1).contiguous())
        return self._neg

    def _finish_cpu(self, crops, ys, xs, flips, shift) -> torch.Tensor:
        """Image by image, so that each step's data stays in the core's cache: about 12 ms
        for 128 crops of 227 on one Zen 4 core, against 75 ms for the same arithmetic as four
        whole-batch passes, and 90 ms more for gathering the mean crops. The images are seen
        as rows of W x C values, with the per-channel factors repeated along a row: a
        broadcast over a last dimension of 3 is the slow case of PyTorch's elementwise loops
        (13 against 4 ms for the multiply alone)."""
        n, s, c, side = len(crops), self.size, self.split.channels, self.split.size
        neg, mirrored = self._scaled_mean()
        scale = self._scale("cpu").repeat(s)
        offset = (shift / self.std).repeat(1, s)  # (N, s * C)
        out = torch.empty(n, s, s, c)
        for k, (y, x, f) in enumerate(zip(ys.tolist(), xs.tolist(), flips.tolist(), strict=True)):
            left = side - x - s if f else x  # a mirrored crop's columns in the mirrored mean
            mean_rows = (mirrored if f else neg)[y : y + s, left : left + s].reshape(s, s * c)
            row = out[k].view(s, s * c)
            row.copy_(crops[k].view(s, s * c))
            torch.addcmul(mean_rows, row, scale, out=row)
            row.add_(offset[k])
        return out

    def _offsets(self, ys, xs, flips, device) -> torch.Tensor:
        """-mean / std cut at each image's crop position and mirrored with it (the paper
        subtracts the mean image before cropping), as one gather: (N, size, size, C)."""
        neg = self._on(device, "neg")
        steps = torch.arange(self.size, device=device)
        rows = to_device(ys, device)[:, None] + steps
        cols = to_device(xs, device)[:, None] + torch.where(to_device(flips, device)[:, None],
                                                             self.size - 1 - steps, steps)  # fmt: skip
        return neg[rows[:, :, None], cols[:, None, :]]

    def display(self, chosen: torch.Tensor) -> torch.Tensor:
        return self.read(chosen, None)[0].permute(0, 3, 1, 2)


def batch_maker_for(split: ImageSet | StoreSplit, size: int, mean: torch.Tensor,
                    std: torch.Tensor, *, train: bool = False, flip: bool = False,
                    padding: int = 0, pca: PCA | None = None) -> Batches:  # fmt: skip
    """The batch maker for ``split``, whichever kind it is: ``size`` the network's input (a
    store's images are cropped to it; in-memory ones already have it, padded by ``padding``
    for their random crops), ``mean`` (C,) per channel or (H, W, C) the mean image in [0, 1]
    units, ``std`` (C,); ``train``: augmented by ``flip``, ``padding`` and ``pca``."""
    if split.streamed:  # images read as stored, H x W x C, cropped to the input per batch
        return StoreBatches(split, size, mean, std, flip, pca) if train else \
            StoreBatches(split, size, mean, std)  # fmt: skip
    mean = mean.permute(2, 0, 1) if mean.dim() == 3 else mean  # added to (N, C, H, W) batches
    if not train:
        return MemoryBatches(split, mean, std)
    return MemoryBatches(split, mean, std, BatchAugment(padding, flip), pca)

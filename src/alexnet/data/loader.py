"""Batches from an in-memory :class:`ImageSet`, sharded across DDP ranks, resumable mid-epoch.

The order of an epoch comes from ``torch.utils.data.DistributedSampler`` (with ``set_epoch``),
single-process runs included, so one process and N processes see the same global order. Each
batch's augmentation uses a generator seeded from (seed, epoch, batch index): a run resumed at
any batch reproduces the rest of the epoch exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DistributedSampler

from alexnet.data.augment import normalise
from alexnet.data.imageset import ImageSet


class _Length:
    """All DistributedSampler needs of a data set is its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class BatchLoader:
    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        train: bool,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.data, self.train, self.augment, self.seed = data, train, augment, seed
        self.device = torch.device(device)
        self.local_batch = batch_size // world_size
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self.channels_last = channels_last
        self.sampler = DistributedSampler(
            _Length(len(data)),
            num_replicas=world_size,
            rank=rank,
            shuffle=train,
            seed=seed,
            drop_last=train,  # evaluation keeps every image (the last shard may repeat a few)
        )
        self.epoch = 0
        # Evaluation must count each image once: DistributedSampler pads the last shard by
        # repeating images; those repeats are masked out through `valid`.
        self.total = len(data)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.local_batch if self.train else -(-n // self.local_batch)

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the run's device. For CUDA through pinned (page-locked) memory, so that the
        copy is asynchronous: without it ``non_blocking`` copies from pageable memory wait for
        the transfer, and the GPU idles while the CPU gathers the next batch."""
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (images, labels, valid) from batch ``start`` on; ``valid`` masks repeats."""
        indices = torch.tensor(list(iter(self.sampler)), dtype=torch.int64)
        position = torch.arange(len(indices)) * self.sampler.num_replicas + self.sampler.rank
        for b in range(start, len(self)):
            chosen = indices[b * self.local_batch : (b + 1) * self.local_batch]
            valid = position[b * self.local_batch : (b + 1) * self.local_batch] < self.total
            images, labels = (
                self.to_device(self.data.images[chosen]),
                self.to_device(self.data.labels[chosen]),
            )
            if self.augment is not None:
                g = torch.Generator(device="cpu")
                g.manual_seed(
                    hash((self.seed, self.epoch, b, self.sampler.rank)) & 0x7FFF_FFFF_FFFF
                )
                images = self.augment(images, g)
            yield (
                normalise(images, self.mean, self.std, self.channels_last),
                labels,
                valid.to(self.device),
            )

    def __iter__(self):
        return self.batches()

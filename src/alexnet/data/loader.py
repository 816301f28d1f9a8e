"""Batches of a data set, sharded across DDP ranks, resumable mid-epoch, optionally read by
worker processes.

The order of an epoch comes from ``torch.utils.data.DistributedSampler`` (with ``set_epoch``),
single-process runs included, so one process and N processes see the same global order. Each
batch's random draws use a generator seeded from (seed, epoch, batch index, rank): a run
resumed at any batch reproduces the rest of the epoch exactly, however many workers read.

With ``workers`` > 0, ``torch.utils.data.DataLoader`` processes run each batch's ``read``
(the image reads, crops and flips, batches.py) ahead of the training step; the float work of
``finish`` runs where the network does (on the GPU for CUDA). The workers send uint8 crops,
a quarter of the bytes of the float batch they become, through a ring of shared buffers
(:class:`_Slots`) made once, rather than a new shared-memory segment per batch.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from alexnet.data.batches import Batches, to_device
from alexnet.data.store import StoreError
from alexnet.errors import UserError
from alexnet.processes import worker_start

_PREFETCH = 2  # batches each loader worker is asked for ahead (DataLoader's default)


class _Length:
    """All DistributedSampler needs of a data set is its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Slots:
    """Batch buffers in shared memory, made before the workers start and used in turn: a
    worker writes batch k's uint8 crops into slot k mod ``count`` and sends only the slot's
    number.

    Why: a new shared-memory segment per batch is mapped afresh by the worker and again by the
    training process, and every 4 KB page of it faults on first touch in both (20,000 faults
    per 79 MB batch of 512 crops of 227). On one H200 (16 cores, a sandboxed kernel where
    faults are dear) that held the loader to 14,000 images/s however many workers read; the
    ring's pages are mapped once. On CUDA the ring is also registered as pinned memory
    (``cudaHostRegister``): the copy to the GPU is an asynchronous DMA from the slot itself,
    with no copy into a pinned buffer first.

    A slot is safe to refill because DataLoader keeps at most ``prefetch_factor x workers``
    batches requested ahead, in order: with ``count`` above that, the slot of a newly
    requested batch was last used by a batch the training process has already received and,
    on the CPU, finished; on CUDA, an event recorded after its copy to the GPU (on the copy
    stream, BatchLoader._arrive) is waited on before reuse."""

    def __init__(self, count: int, shape: tuple[int, ...], device: torch.device) -> None:
        self.count, self.used, self.next, self.owner = count, [None] * count, 0, os.getpid()
        check_shared_memory(count * math.prod(shape))
        self.buffers = torch.empty((count, *shape), dtype=torch.uint8).share_memory_()
        self.pinned = False
        if device.type == "cuda":  # the pages are pinned (and so faulted) once, here
            error = torch.cuda.cudart().cudaHostRegister(
                self.buffers.data_ptr(), self.buffers.nbytes, 0
            )
            self.pinned = int(error) == 0  # else to_device copies each batch into pinned memory

    def take(self) -> int:
        """The next slot, once the GPU has finished copying out of it."""
        slot, self.next = self.next % self.count, self.next + 1
        if self.used[slot] is not None:
            self.used[slot].synchronize()
            self.used[slot] = None
        return slot

    def release(self, slot: int) -> None:
        """On CUDA: the copy out of ``slot`` is enqueued (on the current stream). Elsewhere the
        batch is finished before the next is requested, and the ring's bound alone suffices."""
        self.used[slot] = torch.cuda.Event()
        self.used[slot].record()

    def __getstate__(self) -> dict:  # workers receive the buffers, never the CUDA events
        return {"count": self.count, "buffers": self.buffers, "used": [None] * self.count,
                "next": 0, "pinned": False, "owner": -1}  # fmt: skip

    def __del__(self) -> None:
        if self.pinned and os.getpid() == self.owner:  # not in a forked worker
            for event in self.used:  # copies still reading the ring finish first
                if event is not None:
                    event.synchronize()
            torch.cuda.cudart().cudaHostUnregister(self.buffers.data_ptr())


def check_shared_memory(needed: int, where: str = "/dev/shm") -> None:
    """Refuse, in one line, a ring larger than the shared memory left: past it, the first
    write to a page kills the process with SIGBUS, not an error (Docker gives 64 MB)."""
    if not os.path.isdir(where):
        return
    stat = os.statvfs(where)
    free = stat.f_bavail * stat.f_frsize
    if needed > free:
        raise OSError(
            f"the data loader needs {needed / 2**30:.1f} GiB of shared memory and {where} has "
            f"{free / 2**30:.1f} GiB free: in Docker run with --shm-size=8g (or --ipc=host), "
            "or lower data.workers or data.batch_size"
        )


@dataclass
class _InSlot:
    """A worker's batch whose crops are in ``slot`` of the ring, the first ``n`` of it."""

    slot: int
    n: int


class _PlannedReads(Dataset):
    """Item (epoch, b, slot): the raw batch b of that epoch, what a worker computes. Each
    worker works out an epoch's order itself (the sampler's, from the seed and the epoch), so
    the same workers serve every epoch."""

    def __init__(self, plan: _Plan, slots: _Slots | None) -> None:
        self.plan, self.slots, self.epoch, self.indices = plan, slots, -1, torch.empty(0)

    def __getitem__(self, key: tuple[int, int, int]):
        epoch, b, slot = key
        if epoch != self.epoch:
            self.indices, self.epoch = self.plan.order(epoch), epoch
        out = self.slots.buffers[slot] if self.slots is not None else None
        try:
            raw = self.plan.read(self.indices, epoch, b, out)
        except StoreError as exc:  # raised again by the training process, as its own one line
            return _Failed(str(exc))
        return raw if out is None else (_InSlot(slot, len(raw[0])), *raw[1:])


@dataclass
class _Failed:
    """A worker's read that failed, and why; DataLoader would wrap the error in the worker's
    traceback, which is no message for a user."""

    message: str


@dataclass
class _Plan:
    """Which images make batch b of an epoch and with which random draws: all a worker needs
    (kept apart from the loader, which holds the workers)."""

    sampler: DistributedSampler
    batch_maker: Batches
    local_batch: int
    seed: int
    train: bool

    def generator(self, epoch: int, b: int) -> torch.Generator | None:
        """Batch ``b``'s random draws; evaluation draws none."""
        if not self.train:
            return None
        g = torch.Generator(device="cpu")
        g.manual_seed(hash((self.seed, epoch, b, self.sampler.rank)) & 0x7FFF_FFFF_FFFF)
        return g

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's image indices for ``epoch``, in order."""
        self.sampler.set_epoch(epoch)
        return torch.tensor(list(iter(self.sampler)), dtype=torch.int64)

    def read(self, indices: torch.Tensor, epoch: int, b: int, out: torch.Tensor | None = None):
        chosen = indices[b * self.local_batch : (b + 1) * self.local_batch]
        return self.batch_maker.read(chosen, self.generator(epoch, b), out)


class _Keys:
    """The workers' sampler: (epoch, b, slot) for the batches now wanted. DataLoader draws a
    key when it sends the batch to a worker, so that is when a slot is taken (-1: no ring)."""

    def __init__(self, slots: _Slots | None) -> None:
        self.slots = slots
        self.epoch = self.start = self.stop = 0

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for b in range(self.start, self.stop):
            yield self.epoch, b, self.slots.take() if self.slots is not None else -1

    def __len__(self) -> int:
        return self.stop - self.start


def _worker_start(parent: int, worker: int) -> None:
    worker_start(parent, worker)  # killed with SIGKILL, a run's workers lived on for 5 s and more
    torch.set_num_threads(1)  # the workers are the parallelism; the training step has the cores


class BatchLoader:
    # On CUDA a batch is moved and finished (crop arithmetic, colour noise, mean subtraction:
    # batches.py) on a stream of its own. False: finished on the compute stream between steps,
    # as before; kept to compare the two (tests/test_cuda.py, bench/gpu.py).
    finish_aside = True

    def __init__(
        self,
        data,
        batch_size: int,
        batches: Batches,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        workers: int = 0,
    ) -> None:
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.data, self.batch_maker, self.train, self.seed = data, batches, train, seed
        self.device = torch.device(device)
        self.local_batch = batch_size // world_size
        self.channels_last, self.workers = channels_last, workers
        self.sampler = DistributedSampler(
            _Length(len(data)),
            num_replicas=world_size,
            rank=rank,
            shuffle=train,
            seed=seed,
            drop_last=train,  # evaluation keeps every image (the last shard may repeat a few)
        )
        self.plan = _Plan(self.sampler, batches, self.local_batch, seed, train)
        self.epoch = 0
        self._reader: DataLoader | None = None
        self._slots = self._ring()
        self._copies: torch.cuda.Stream | None = None  # made on first use: CUDA only
        self._keys = _Keys(self._slots)
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
        return to_device(t, self.device)

    def _ring(self) -> _Slots | None:
        """Shared batch buffers for batch makers that write into one (batches.StoreBatches)."""
        shape = getattr(self.batch_maker, "read_shape", None)
        if self.workers == 0 or shape is None:
            return None
        ahead = _PREFETCH * self.workers  # the most batches DataLoader requests ahead
        return _Slots(ahead + 2, shape(self.local_batch), self.device)

    def _workers(self, start: int) -> DataLoader:
        """The worker processes, started once and kept (``persistent_workers``). A fork shares
        the parent's heap, and each page the parent writes afterwards is copied: workers
        forked anew every epoch from a training process that keeps its freed memory
        (runtime.keep_freed_memory) each held a stale copy of its grown heap. Streaming a 6 GB
        store through two workers, that took the anonymous memory of the process and its
        workers to 1.3, 3.5 and 5.6 GB over three passes; kept workers hold it at 0.55 GB."""
        if self._reader is None:
            self._reader = DataLoader(
                _PlannedReads(self.plan, self._slots), batch_size=None, sampler=self._keys,
                num_workers=self.workers, prefetch_factor=_PREFETCH, persistent_workers=True,
                # The ring is pinned already; other batches are pinned by a DataLoader thread.
                pin_memory=self.device.type == "cuda" and self._slots is None,
                worker_init_fn=functools.partial(_worker_start, os.getpid()),
                # Its own generator: a DataLoader otherwise draws its workers' base seed from
                # the global random state, which dropout uses and checkpoints save, so a
                # resumed run would draw one number more than the run it continues (the
                # batches do not use that seed: each has its own generator).
                generator=torch.Generator(),
            )  # fmt: skip
        self._keys.epoch, self._keys.start, self._keys.stop = self.epoch, start, len(self)
        return self._reader

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (images, labels, valid) from batch ``start`` on; ``valid`` masks repeats."""
        indices = self.plan.order(self.epoch)
        position = torch.arange(len(indices)) * self.sampler.num_replicas + self.sampler.rank
        if self.workers > 0 and len(self) > start:
            reads = iter(self._workers(start))
        else:
            reads = (self.plan.read(indices, self.epoch, b) for b in range(start, len(self)))
        for b, raw in enumerate(reads, start):
            if isinstance(raw, _Failed):
                raise StoreError(raw.message)
            slot = raw[0].slot if isinstance(raw[0], _InSlot) else None
            if slot is not None:
                raw = (self._slots.buffers[slot][: raw[0].n], *raw[1:])
            valid = position[b * self.local_batch : (b + 1) * self.local_batch] < self.total
            yield self._arrive(tuple(raw), valid, slot)

    def _arrive(self, raw: tuple[torch.Tensor, ...], valid: torch.Tensor,
                slot: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """A batch on the run's device, finished: (x, y, valid). On CUDA it is copied and
        finished on a stream of its own, so that the copy engine moves batch k+1 and its
        arithmetic (a gather of the mean image's crops, a multiply-add over 79 MB at batch 512)
        runs beside step k, rather than in line between steps on the compute stream (on one
        H200 at batch 512: 18,248 images/s fed from a store against 25,000 for the network
        alone, with the copy alone moved aside). The compute stream waits for the batch only
        where it is first used; the ring's slot is released once the copy, not the step, is
        done. The random draws were made on the host (``read``), so the batch is the same bit
        for bit on either stream."""
        if self.device.type != "cuda":  # the CPU: as they are; MPS: copied
            x, y = self.batch_maker.finish(raw, self.device, self.channels_last)
            return x, y, valid.to(self.device)
        if self._copies is None:
            self._copies = torch.cuda.Stream(self.device)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._copies):
            *moved, valid = [to_device(t, self.device) for t in (*raw, valid)]
            if slot is not None:
                self._slots.release(slot)  # an event on the copy stream, after the copy
            if self.finish_aside:
                x, y = self.batch_maker.finish(tuple(moved), self.device, self.channels_last)
        compute.wait_stream(self._copies)
        if not self.finish_aside:
            x, y = self.batch_maker.finish(tuple(moved), self.device, self.channels_last)
        for t in (*moved, x, y, valid):  # made on the copy stream, freed after the step's use
            t.record_stream(compute)
        return x, y, valid

    def __iter__(self):
        return self.batches()

    def examples(self, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images as shown, network inputs, labels) of ``chosen``, as evaluation sees them."""
        raw = self.batch_maker.read(chosen, None)
        x, y = self.batch_maker.finish(raw, self.device, self.channels_last)
        return self.batch_maker.display(chosen), x, y

"""Where and how a run computes: processes, device, threads, precision and memory layout.

Chosen once at the start of a run from the recipe's ``train`` settings and the hardware, so
the rest of the code only reads the result.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from alexnet.processes import Stopped, raise_stopped


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp: torch.dtype | None  # the autocast dtype; None: float32
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes logs and checkpoints."""
        return self.rank == 0

    def describe(self) -> str:
        layout = ", channels_last" if self.channels_last else ""
        return (f"{self.device}, {'bf16' if self.amp else 'fp32'}{layout}, "
                f"{torch.get_num_threads()} threads, {self.world_size} process(es)")  # fmt: skip


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank): torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them
    this is one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(local_rank: int) -> torch.device:
    """CUDA where present (one GPU per local rank), else Apple's MPS, else the CPU. The MPS path
    runs in float32 with the PyTorch LRN; no Apple machine was at hand to test it."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """bfloat16 pays on CPUs with AMX or AVX512-BF16; without them it is emulated and measured
    10x slower than float32 on an AVX2-only Zen 3. A cap on oneDNN's instructions
    (``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16) takes them away as well."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if cap not in ("ALL", "DEFAULT") and not any(
        t in cap for t in ("BF16", "FP16", "AMX", "AVX10")
    ):
        return False  # the caps at or above AVX512_CORE_BF16 all name one of these
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def pick_precision(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` (auto, fp32, bf16), or None for float32."""
    if setting == "fp32":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None  # MPS: float32, the one precision every op there supports
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def pick_channels_last(setting: bool | str) -> bool:
    """channels_last (NHWC) lets oneDNN and cuDNN skip layout reorders and vectorises max-pooling
    over channels: alexnet-small on Fashion-MNIST measured 677 against 585 images/s in fp32 on a
    2-core AVX2 CPU, and it is the layout bf16 kernels expect, so "auto" turns it on."""
    return setting if isinstance(setting, bool) else True


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory(setting: str = "auto") -> bool:
    """Whether freed tensors stay with the process for the next step's (``train.allocator``).

    glibc serves every block over its mmap threshold (128 KiB to 32 MiB) with a fresh mmap and
    returns it on free, so each step's activations are faulted in again page by page (the
    kernel zeroes every page). With mmap off and trimming raised to 2 GiB, freed blocks stay
    in the heap and the next step reuses them, at the price of keeping the peak memory of a
    step for the whole run. bench/throughput.py measures it on the paper's network ("freed
    memory kept"): 1.10x in bfloat16 on a 2-core Zen 4, 1.06x there with AVX2 code paths in
    float32 and 1.16x with AVX-512 ones (a first probe gave +20-28%; the machine is noisy). The
    same effect is what jemalloc or tcmalloc preloaded give; this needs no preload. Only where
    the C library is glibc; "system" leaves malloc as it is."""
    if setting == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # pragma: no cover - glibc under another name
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def set_threads(setting: int, local_world_size: int) -> None:
    """``setting`` threads, or (0) the cores this process may use shared among its node's ranks."""
    if setting > 0:
        torch.set_num_threads(setting)
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(1, local_world_size)))


def tune_cudnn(deterministic: bool = False) -> None:
    """Batches keep their shape from step to step, so cuDNN may time its algorithms for each
    convolution once and keep the fastest (``cudnn.benchmark``); a deterministic run leaves
    it off, since the timing can pick another algorithm in another run."""
    torch.backends.cudnn.benchmark = not deterministic


def start_runtime(train) -> Runtime:
    """Set up processes, device, threads and determinism for the recipe's ``train`` settings."""
    rank, world, local = init_distributed()
    device = pick_device(local)
    set_threads(train.threads, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if train.deterministic:
        # cuBLAS is deterministic only with a fixed workspace; without it PyTorch refuses the
        # first matrix product on a GPU. Read when cuBLAS starts, which is later than here.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        tune_cudnn(train.deterministic)
    amp = pick_precision(train.precision, device)
    if device.type == "cpu":
        keep_freed_memory(train.allocator)
    return Runtime(device, amp, pick_channels_last(train.channels_last), rank, world, local)


def autocast(device: torch.device, amp: torch.dtype | None):
    """Mixed precision in ``amp`` where it is set, plain float32 where it is None."""
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)


def any_rank(rt: Runtime, *flags: bool) -> list[bool]:
    """For each flag, whether any rank raised it, so that every rank takes the same decision
    (stop, save, give up) at the same step; one tiny all-reduce per call under DDP."""
    if rt.world_size == 1:
        return list(flags)
    votes = torch.tensor([float(f) for f in flags], device=rt.device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return [bool(v) for v in votes.tolist()]


class StopFlag:
    """SIGTERM and Ctrl-C. Before training is ``armed`` they stop at once (raising
    :class:`Stopped`), so a start that is stopped leaves nothing behind; once armed they ask
    for a checkpoint at the end of the current step, and a second Ctrl-C stops at once."""

    def __init__(self, again: str = "") -> None:
        self.signal: int | None = None
        self.armed = False
        self.now = False  # in a block that changes nothing of the run: stop at once there
        self.again = again  # what continues a stopped run; "": alexnet train --resume RUN
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if not self.armed:
            raise_stopped(signum)
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        if self.now:
            raise_stopped(signum)

    @contextlib.contextmanager
    def at_once(self, allowed: bool = True) -> Iterator[None]:
        """A block that changes nothing of the run (waiting for a batch, evaluating): a signal
        there raises :class:`Stopped` at once, and the run stops at the step before it, rather
        than waiting for the next step to end. What the signal raised there (its Stopped, or
        the error of data-loading workers it ended too: ``kill -TERM`` to the process group)
        ends the block quietly; the caller finds ``signal`` set. ``allowed`` False (several
        ranks, which must stop at the same step): the signal waits for the step as elsewhere."""
        self.now = allowed
        try:
            yield
        except (Stopped, Exception):
            if self.signal is None:
                raise
        finally:
            self.now = False

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

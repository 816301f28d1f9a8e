"""Checkpoints: written atomically, loaded without running code, versioned.

A checkpoint is a plain dict of tensors and Python data (``TrainingState.state_dict``), so
``torch.load(weights_only=True)`` can read it and refuses anything that would need code. It is
written to a temporary file in the same folder, flushed to disk and renamed over the old one,
so a kill or a full disk never leaves a half-written ``last.pt``: the previous one stays.

Format 1 is alexnet 0.1.0's (no ``format`` key); format 2 adds ``format`` and ``changes``.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from alexnet.errors import UserError
from alexnet.files import WriteError, written
from alexnet.settings import format_version

CHECKPOINT_FORMAT = 2
REQUIRED = ("model", "optimizer", "scheduler", "epoch", "batch", "global_step", "epoch_sums",
            "rng", "recipe")  # fmt: skip


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read; the message says which file and why."""


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it (files.written):
    on failure the temporary file is removed and ``path`` keeps its previous contents; a
    disk without room for the tensors is refused before writing."""
    try:
        with written(path, need=tensor_bytes(obj)) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except WriteError as exc:
        raise CheckpointError(str(exc)) from None


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in ``obj`` (nested dicts, lists and tuples): about what
    ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint as a dict in the current format, or a one-line CheckpointError."""
    return migrate(load_file(path), path)


def load_file(path: Path) -> Any:
    """What ``path`` holds (tensors and plain data only), or a one-line CheckpointError."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {_not_a_checkpoint_file(path)}")
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign pickle's protocol
            warnings.simplefilter("ignore", UserWarning)  # precede our own one line otherwise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower() or _asks_for_objects(path):
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain data, which could "
                "run code, so it was not loaded; only use checkpoints written by alexnet"
            ) from None
        raise CheckpointError(
            f"{path}: not a checkpoint (corrupt, or not written by torch.save)"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__})") from None  # fmt: skip
    return state


def _not_a_checkpoint_file(path: Path) -> str:
    """Why ``path`` cannot be read as a checkpoint, naming what it is."""
    if path.is_symlink() and not path.exists():
        return "a symbolic link to nothing, or to itself; point it at a checkpoint"
    if path.parent.is_symlink() and not path.parent.exists():
        return f"{path.parent} is a symbolic link to nothing, or to itself"
    if path.is_dir():
        return "a folder without a checkpoint (was the run started with this folder?)"
    if path.exists():
        return "not a regular file (a device, pipe or socket); give a checkpoint file"
    if path.parent.is_file():
        return f"{path.parent} is a file, not a run folder; give the run folder"
    return "no checkpoint there (was the run started with this folder?)"


def _asks_for_objects(path: Path) -> bool:
    """Whether the pickle in ``path`` (plain, or data.pkl of torch's zip format) names Python
    callables to import and call. Read with pickletools, which parses opcodes and runs
    nothing; a file that does not parse is merely corrupt."""
    try:
        with zipfile.ZipFile(path) as z:
            data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    except (zipfile.BadZipFile, StopIteration, OSError, KeyError):
        data = path.read_bytes()
    calls = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}
    try:
        return any(op.name in calls for op, _arg, _pos in pickletools.genops(data))
    except Exception:
        return False


def migrate(state: Any, path: Path) -> dict[str, Any]:
    """Check the layout of a loaded checkpoint and bring it to the current format."""
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: holds a {type(state).__name__}, not an alexnet checkpoint (a dict with "
            "the model, optimiser, schedule and recipe)"
        )
    try:
        version = format_version(state, CHECKPOINT_FORMAT, "checkpoint", str(path))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: not an alexnet training checkpoint (no {', '.join(missing)})"
        )
    if not isinstance(state["recipe"], dict):
        raise CheckpointError(f"{path}: its recipe is not a table of settings")
    if version == 1:  # alexnet 0.1.0: the same keys, no record of resumes with --set
        state = {**state, "changes": []}
    return {**state, "format": CHECKPOINT_FORMAT}

"""A folder written by one process at a time: a run folder while it trains, a store while it is
prepared, an experiment's run while the experiment trains it.

The lock is an ``flock`` on ``.lock`` inside the folder, so it goes with the process however
the process ends (the kernel releases it, even after SIGKILL). The file is removed when the
lock is released, so a command that ends leaves no dot-file behind. Removing it opens one
race, closed here: a second process may open the file just before it is removed and lock it
once it is released, holding a lock on a file no longer at the path; so a process that takes
the lock checks that the file it locked is still the one there, and tries again if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from alexnet.errors import UserError

LOCK = ".lock"


class FolderBusy(UserError):
    """Another process holds the folder; the message says which folder and what to do."""


@contextlib.contextmanager
def held(folder: Path, busy: str) -> Iterator[None]:
    """``folder`` held by this process for the block; ``busy``: the one-line error where
    another process holds it. A folder that cannot be written to is not locked: whatever
    writes there next fails with its own message, which names the folder."""
    path = folder / LOCK
    handle = None
    for _ in range(100):
        try:
            handle = open(path, "a+b")  # noqa: SIM115 - held open for the block
        except OSError:
            break
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise FolderBusy(busy) from None
        if _same_file(handle, path):
            break
        handle.close()  # locked a file removed meanwhile by its releaser: take the new one
        handle = None
    try:
        yield
    finally:
        if handle is not None:
            path.unlink(missing_ok=True)  # while still held: a taker then finds it gone
            handle.close()


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def in_use(folder: Path) -> bool:
    """Whether a live process holds ``folder`` now (its ``.lock`` left by a killed process
    holds nothing: the kernel released the lock)."""
    try:
        with open(folder / LOCK, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no lock file, or none that can be read: nobody holds it
        return False
    return False

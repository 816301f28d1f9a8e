"""How processes end: workers with their parent, however it ends; a command on SIGTERM.

A parent killed with SIGKILL cannot stop its workers: prepare's were left re-parented to
PID 1 holding about 740 MB each, and the training loader's lived on for PyTorch's 5-second
watchdog. Linux sends a chosen signal to a process when its parent ends (prctl's
PR_SET_PDEATHSIG); a parent already gone before the worker asked is caught by the check after.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # prctl's option: the signal a process gets when its parent ends


def die_with(parent: int) -> None:
    """Called first in a worker whose parent is ``parent``: killed when the parent ends."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no parent-death signal
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def worker_start(parent: int, _worker: int = 0) -> None:
    """Called first in a data-loading worker: it dies with its parent, and leaves Ctrl-C and
    SIGTERM to it. A terminal's Ctrl-C, or ``kill -TERM`` to the process group, reaches every
    worker too: they died of it, and the parent's loader, itself stopping, printed "worker
    killed by signal" tracebacks. Ctrl-C is ignored; SIGTERM ends the worker at once with
    status 0, which the loader does not report (ignoring SIGTERM instead hung the process at
    exit: Python's multiprocessing ends leftover workers with it and then waits for them).
    The parent ends the command in one line, and its workers end with it."""
    die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os._exit(0))
    quiet_peer_gone()


def quiet_resource_tracker() -> None:
    """Called before a pool starts. multiprocessing's resource tracker, a process of its own,
    outlives a parent killed with SIGKILL, frees what it left (a pool's semaphores) and warns
    of it ("There appear to be 5 leaked semaphore objects"), under the shell's prompt after
    the kill. Freeing them is its work, so the warning is noise; the tracker takes the -W
    options of sys.warnoptions when it starts."""
    option = "ignore::UserWarning:multiprocessing.resource_tracker"
    if option not in sys.warnoptions:
        sys.warnoptions.append(option)


def quiet_peer_gone() -> None:
    """A process hands shared memory to another through multiprocessing's resource sharer, a
    thread that serves each on a connection the other opens: a worker its batches to the
    parent, the parent its batch buffers to the workers. A peer ended mid-request (Ctrl-C to
    the group) reset that connection, and the sharer's thread printed a ConnectionResetError
    traceback under the command's "interrupted" (3 times in 22, then once in 23 in ``eval
    --workers 2``). Both end a moment later; only that error of that thread is let pass. The
    sharer reports its errors through sys.excepthook itself, other threads through
    threading.excepthook: both are wrapped. Called in the command's process and each worker."""
    import threading
    import traceback

    sharer = os.path.join("multiprocessing", "resource_sharer.py")

    def peer_gone(exc: BaseException | None, tb) -> bool:
        return isinstance(exc, (ConnectionError, EOFError)) and any(
            f.filename.endswith(sharer) for f in traceback.extract_tb(tb)
        )

    if not getattr(sys.excepthook, "quiet_peer_gone", False):  # once per process
        default_sys = sys.excepthook

        def sys_hook(kind, exc, tb) -> None:
            if not peer_gone(exc, tb):
                default_sys(kind, exc, tb)

        sys_hook.quiet_peer_gone = True
        sys.excepthook = sys_hook
    if not getattr(threading.excepthook, "quiet_peer_gone", False):
        default_thread = threading.excepthook

        def thread_hook(args) -> None:
            if not peer_gone(args.exc_value, args.exc_traceback):
                default_thread(args)

        thread_hook.quiet_peer_gone = True
        threading.excepthook = thread_hook


class Stopped(BaseException):
    """A signal stopped the command; what it was writing is removed as it unwinds."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# Signals whose Stopped was raised. Python ignores an exception raised where it cannot
# propagate (a weakref callback, a __del__ running when the signal arrives): the command then
# ran on and ended with status 0, the signal lost. Every command that catches Stopped exits,
# so one that returns after a Stopped was raised lost it; main then ends it as the signal asked.
RAISED: list[int] = []


def quiet_lost_stops() -> None:
    """A Stopped raised where Python cannot propagate it (a weakref callback run by the
    garbage collector as the signal came) printed "Exception ignored in ..." and a traceback
    (figures, 1 Ctrl-C in 4). RAISED keeps it, and main ends the command with its one line;
    anything else Python cannot raise is printed as before."""
    default = sys.unraisablehook
    if getattr(default, "quiet_lost_stops", False):  # once per process
        return

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, Stopped):
            default(unraisable)

    hook.quiet_lost_stops = True
    sys.unraisablehook = hook


def raise_stopped(signum: int, _frame=None) -> None:
    """A signal handler: SIGTERM unwinds the command as Ctrl-C does."""
    RAISED.append(signum)
    raise Stopped(signum)


@contextlib.contextmanager
def deferred_signals(*signums: int) -> Iterator[None]:
    """SIGINT and SIGTERM (or ``signums``) wait for the block, then act as they would have.

    For code that must not be interrupted halfway: a C++ writer into which a Python exception
    arrives aborts the process, and an import interrupted midway can look like a package that
    is not installed. Only the main thread can handle signals; elsewhere the block just runs.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = signums or (signal.SIGINT, signal.SIGTERM)
    came: list[int] = []
    before = {s: signal.signal(s, lambda signum, _frame: came.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    if came:
        handler = before[came[0]]
        if callable(handler):
            handler(came[0], None)
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), came[0])

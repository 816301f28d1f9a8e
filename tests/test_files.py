"""Writing files whole: temporary names, and what killed processes leave behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from alexnet.data.cache import extract
from alexnet.files import WriteError, write_text, written

GONE = 9_999_999  # above Linux's largest process id (4,194,304): no such process


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path):
    """SIGKILL during export left `.m.PID.partial.pt2` for good; the next write of the same
    name removes it, and leaves a live process's own."""
    abandoned = tmp_path / f".m.{GONE}.partial.pt2"
    abandoned.write_bytes(b"half an archive")
    live = tmp_path / f".m.{os.getppid()}.partial.pt2"  # a running process's, in progress
    live.write_bytes(b"in progress")
    write_text(tmp_path / "m.pt2", "whole")
    assert (tmp_path / "m.pt2").read_text() == "whole"
    assert not abandoned.exists() and live.exists()


def test_a_killed_extraction_is_removed_by_the_next(tmp_path, monkeypatch):
    """A prepare killed while unpacking an archive left cache/extracted/*.part behind."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.txt").write_text("x")
    archive = tmp_path / "photos.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "a", arcname="a")
    first = extract(archive)
    abandoned = first.with_name(f"{first.name}.{GONE}.part")
    abandoned.mkdir()
    (abandoned / "half").write_text("half")
    for entry in [first / ".complete"]:
        entry.unlink()  # as if this archive had not been unpacked yet
    again = extract(archive)
    assert (again / "a" / "x.txt").read_text() == "x"
    assert not abandoned.exists()
    assert sorted(p.name for p in again.parent.iterdir()) == [again.name]


def test_an_archive_unpacked_again_replaces_its_old_copy(tmp_path, monkeypatch):
    """A rewritten archive was unpacked beside its old copy, which stayed for good."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    archive, other = tmp_path / "photos.tar", tmp_path / "other" / "photos.tar"
    for i, path in enumerate((archive, other, archive)):
        (tmp_path / "x.txt").write_text(str(i))
        path.parent.mkdir(exist_ok=True)
        with tarfile.open(path, "w") as tar:
            tar.add(tmp_path / "x.txt", arcname="x.txt")
        os.utime(path, ns=(i, i))  # a new modification time, as a rewrite gives
        unpacked = extract(path)
    assert (unpacked / "x.txt").read_text() == "2"
    assert sorted(p.name for p in unpacked.parent.iterdir()) == sorted(
        [unpacked.name, extract(other).name]
    )


def test_a_stopped_extraction_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while unpacking: the half-unpacked copy is removed at once."""
    import pytest

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "photos.tar"
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(archive)
    assert list(Path(tmp_path / "cache" / "extracted").iterdir()) == []


def test_a_file_that_appears_meanwhile_is_kept_when_replacing_is_not_asked(tmp_path):
    """Two exports to one new name each found it free, then the second replaced the first's
    file without --overwrite; now the one that ends second is refused."""
    out = tmp_path / "net.onnx"
    refused = pytest.raises(FileExistsError, match="appeared while this was written")
    with refused, written(out, replace=False) as tmp:
        tmp.write_text("second")
        out.write_text("first")  # the other command, finished meanwhile
    assert out.read_text() == "first" and os.listdir(tmp_path) == ["net.onnx"]
    with written(out) as tmp:  # --overwrite: replaced
        tmp.write_text("second")
    assert out.read_text() == "second"


def test_a_read_only_disk_is_named_as_such(tmp_path):
    from .test_full_disk import small_disk, unmount

    disk = small_disk(tmp_path, "1m", ",ro")
    try:
        refused = pytest.raises(WriteError, match="is mounted read-only")
        with refused, written(disk / "x.onnx", need=10**9):  # not blamed on its free space
            pass
        from alexnet.training.runs import create_run_dir

        with pytest.raises(WriteError, match="on a disk mounted read-only; choose another"):
            create_run_dir(disk, "r", "tiny")  # as --runs: said to have 1 MB free
    finally:
        unmount(disk)


WORKERS = """
import functools, os, signal, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from alexnet.processes import Stopped, raise_stopped, worker_start

class Slow(Dataset):
    def __len__(self):
        return 1000
    def __getitem__(self, i):
        time.sleep(0.05)
        return torch.zeros(1)

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job ignores it
    signal.signal(signal.SIGTERM, raise_stopped)  # as the command does
    start = functools.partial(worker_start, os.getpid())
    try:
        for i, _ in enumerate(DataLoader(Slow(), num_workers=2, worker_init_fn=start)):
            if i == 3:
                print("reading", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Stopped:
        print("stopped", file=sys.stderr)
        sys.exit(143)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_group_leaves_the_loaders_workers_quiet(tmp_path, signum):
    """Ctrl-C or ``kill -TERM`` to the group reaches the workers too: they died of it, and the
    parent's loader, itself stopping, printed "worker killed by signal" tracebacks. They leave
    Ctrl-C to the parent and end quietly on SIGTERM."""
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout.readline() == "reading\n"
    from .test_store import _alive, _children

    workers = _children(proc.pid)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "killed by signal" not in err, err
    deadline = time.time() + 2
    while any(map(_alive, workers)) and time.time() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], "workers outlived their parent"


def test_a_process_that_leaves_its_loaders_workers_running_still_exits(tmp_path):
    """Python's multiprocessing ends the workers left at exit with SIGTERM and waits for them:
    workers that ignored SIGTERM kept the test suite's own process from ever exiting."""
    script = tmp_path / "left.py"
    script.write_text(
        WORKERS.split("if __name__")[0]
        + """
if __name__ == "__main__":
    loader = DataLoader(Slow(), num_workers=2, persistent_workers=True,
                        worker_init_fn=functools.partial(worker_start, os.getpid()))
    batches = iter(loader)
    next(batches)
    print("leaving", flush=True)
"""
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and "leaving" in done.stdout, done.stderr


def test_a_worker_says_nothing_when_its_gone_parent_resets_the_sharers_connection():
    """Ctrl-C to eval --workers 2: a worker's resource-sharer thread printed a
    ConnectionResetError traceback, 3 times in 22, as the parent went. That error of that
    thread is let pass; the same error elsewhere, and other errors there, are printed."""
    import errno
    import multiprocessing
    import threading

    from alexnet.processes import quiet_peer_gone

    sharer = os.path.join(os.path.dirname(multiprocessing.__file__), "resource_sharer.py")
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    default, shown = threading.excepthook, []
    try:
        threading.excepthook = lambda args: shown.append((args.exc_type, args.exc_traceback))
        quiet_peer_gone()
        raise_in_thread(reset, sharer)
        raise_in_thread(ConnectionResetError(errno.ECONNRESET, "reset"), __file__)
        raise_in_thread(ValueError("a real bug"), sharer)
    finally:
        threading.excepthook = default
    assert [kind for kind, _ in shown] == [ConnectionResetError, ValueError]


def raise_in_thread(exc: BaseException, where: str) -> None:
    """``exc`` raised in a thread of its own, from a frame of the file ``where``."""
    import threading

    scope = {"exc": exc}
    exec(compile("def run():\n    raise exc\n", where, "exec"), scope)
    thread = threading.Thread(target=scope["run"])
    thread.start()
    thread.join()


def test_the_command_itself_lets_a_lost_peer_pass(monkeypatch):
    """The parent of ``eval --workers 2`` shares its batch buffers with the workers: its own
    sharer thread printed the ConnectionResetError once in 23 Ctrl-Cs."""
    import errno
    import multiprocessing
    import threading

    from alexnet.cli import main

    shown = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, exc, tb: shown.append(kind))
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored after
    with pytest.raises(SystemExit):
        main(["--version"])
    sharer = os.path.join(os.path.dirname(multiprocessing.__file__), "resource_sharer.py")
    for exc in (ConnectionResetError(errno.ECONNRESET, "reset by peer"), ValueError("a bug")):
        scope = {"exc": exc, "sys": sys}  # as the sharer's thread reports what it caught
        exec(compile("def run():\n    try:\n        raise exc\n    except BaseException:\n"
                     "        sys.excepthook(*sys.exc_info())\n", sharer, "exec"), scope)  # fmt: skip
        thread = threading.Thread(target=scope["run"])
        thread.start()
        thread.join()
    assert shown == [ValueError]


def test_a_stop_python_cannot_raise_prints_no_traceback(monkeypatch):
    """Ctrl-C to figures as it finished: the garbage collector's weakref callback met the
    Stopped, and Python printed "Exception ignored in ..." with a traceback. RAISED keeps
    the signal; other errors Python cannot raise are printed as before."""
    from alexnet.processes import Stopped, quiet_lost_stops

    shown = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: shown.append(u.exc_type))
    quiet_lost_stops()

    class Dies:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def __del__(self) -> None:
            raise self.exc

    Dies(Stopped(2))  # collected at once, its __del__ raising where nothing can catch it
    Dies(ValueError("a real bug"))
    assert shown == [ValueError]

"""Writing a file so that a failure leaves nothing behind: a temporary name beside the file,
renamed over it once complete, removed on any failure; the room on its disk checked first
where the size is known; and a failure of the disk (full, read-only, gone) said in one line
that names the file and the disk, whatever library was writing.

Every writer of the package goes through :func:`written`: checkpoints, exports, figures.
Without it a full disk gave two chained tracebacks (``OSError 28`` inside torch's zip
writer, then its ``RuntimeError: unexpected pos``) and left the temporary file.

Also here: what processes killed midway left (:func:`remove_abandoned`) and where the package
keeps what it makes once and reuses (:func:`cache_dir`, the user cache).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from alexnet.errors import UserError

MARGIN = 1 << 20  # bytes kept free beyond the estimate: metadata, the file system's own
NAMES = "alexnet.names"  # the error handler every printed or written text uses (below)


def _escaped(exc: UnicodeError) -> tuple[str, int]:
    """A file name's bytes that are not UTF-8, which Python holds as the surrogates U+DC80 to
    U+DCFF, written as ``\\xNN`` (the byte); any other character UTF-8 cannot hold as
    ``\\uNNNN``. One spelling on the terminal, in logs, lists and errors: Python's own
    handlers printed the same name as ``\\udcff`` in one place and as a raw byte in another."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else f"\\u{ord(c):04x}" for c in bad), exc.end  # fmt: skip


codecs.register_error(NAMES, _escaped)


class WriteError(UserError):
    """A file that could not be written; the message names it and why, in one line."""


def text_name(path: Path, writer: str) -> None:
    """Refuse, before any work, a name whose bytes are not UTF-8 where ``writer`` takes
    names as text: TensorBoard's and the ONNX, safetensors and pt2 writers fail on one with
    a ``UnicodeEncodeError`` naming no file. Elsewhere such names are written as they are."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise WriteError(f"{path}: a name that is not valid UTF-8, which {writer} cannot "
                         "write to; rename it or choose another") from None  # fmt: skip


def disk_failure(exc: BaseException) -> OSError | None:
    """The operating system's error behind ``exc``, if any: libraries wrap it (torch's
    zip writer raises ``RuntimeError`` from it, safetensors its own error class)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those above it that do not exist yet, innermost first: what a start
    that makes them removes again if it fails (:func:`remove_empty`)."""
    return [f for f in (folder, *folder.parents) if not f.exists()]


def remove_empty(folders: list[Path]) -> None:
    """Each of ``folders`` (innermost first) that is still empty; others are left alone."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return -1  # unknown: do not refuse on a guess


def shell_word(path: Path | str) -> str:
    """``path`` as one word of a command a message suggests: quoted where the shell would split
    it (`mkdir -p ex dir` made two folders)."""
    import shlex

    return shlex.quote(str(path))


def size(n: int) -> str:
    """``n`` bytes in words a person reads at a glance: 2.4 MB, 61 kB, 512 bytes."""
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} bytes"


def _why(exc: BaseException, folder: Path) -> str:
    failure = disk_failure(exc)
    text = str(exc)
    if (failure is not None and failure.errno == errno.ENOSPC) or "No space left" in text:
        return f"the disk holding {folder} is full"
    if failure is not None:
        return failure.strerror or str(failure)
    if 0 <= free_bytes(folder) < MARGIN:  # a library that hid the OS error (safetensors)
        return f"the disk holding {folder} is full"
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def written(out: Path, need: int = 0, replace: bool = True) -> Iterator[Path]:
    """A temporary name beside ``out`` to write to (the suffix kept: some writers choose by
    it), renamed to ``out`` once the block ends; ``need``: the bytes the file will take
    about, refused at once where its disk has less free (plus a margin). Any failure of the
    block that comes from the disk is a :class:`WriteError`; others pass as they are.
    ``replace`` false: a file that appeared at ``out`` meanwhile (another command writing the
    same name) is kept and this one refused, rather than silently replaced."""
    folder = out.parent
    if read_only(folder):  # its free space, not the reason, was blamed before
        raise WriteError(f"cannot write {out}: the disk holding {folder} is mounted read-only; "
                         "write elsewhere")  # fmt: skip
    free = free_bytes(folder)
    if need and 0 <= free < need + MARGIN:
        raise WriteError(f"cannot write {out}: the disk holding {folder} has {size(free)} "
                         f"free and the file needs about {size(need)}, with {size(MARGIN)} to "
                         "spare; nothing was written")  # fmt: skip
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.partial{out.suffix}")
    remove_abandoned(out.with_name(f".{out.stem}.*.partial{out.suffix}"))
    try:
        yield tmp
        mask = os.umask(0)  # some writers make a private file (0600): give it the usual mode
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        _place(tmp, out, replace)
    except FileExistsError:  # written meanwhile by another command: said as it is
        raise
    except Exception as exc:
        if disk_failure(exc) is None and not (0 <= free_bytes(folder) < MARGIN):
            raise
        kept = "the previous file is kept" if out.exists() else "nothing was written"
        raise WriteError(f"cannot write {out}: {_why(exc, folder)}; {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_only(folder: Path) -> bool:
    """Whether ``folder`` is on a disk mounted read-only."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:  # a folder that is not there: said by the write itself
        return False


def _place(tmp: Path, out: Path, replace: bool) -> None:
    """``tmp`` renamed to ``out``; without ``replace``, only where ``out`` is still free: a
    hard link is made only if the name is free, in one step (a check, then a rename, let a
    second writer replace the first's file between the two)."""
    if replace:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise FileExistsError(
            f"{out}: appeared while this was written (another command "
            "writing the same name?); it is kept: give --overwrite to "
            "replace it, or write to another name"
        ) from None
    except OSError as exc:  # a file system without hard links: as close as it allows
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if out.exists() or out.is_symlink():
            raise FileExistsError(f"{out}: appeared while this was written; it is kept") from None
        os.replace(tmp, out)


def append_text(path: Path, text: str) -> None:
    """``text`` added to the end of ``path`` (a log); a failure of its disk is a WriteError
    naming the file and the disk, as every other write's."""
    if path.is_symlink():  # a log linked elsewhere wrote outside the run (a copy of /etc/passwd)
        raise WriteError(f"{path}: a symbolic link, not the run's own log; remove it")
    try:
        with open(path, "a", encoding="utf-8", errors=NAMES) as f:
            f.write(text)
    except OSError as exc:
        if disk_failure(exc) is None:
            raise
        raise WriteError(f"cannot write {path}: {_why(exc, path.parent)}") from None


def write_text(out: Path, text: str) -> None:
    """``out`` holds ``text`` whole or is as it was: written under a temporary name first."""
    with written(out) as tmp:
        tmp.write_text(text)


def remove(path: Path) -> None:
    """``path`` gone: a folder with all it holds, a file or a link (the link, never what it
    points to)."""
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def remove_abandoned(pattern: Path) -> None:
    """Temporary files matching ``pattern`` (``*`` standing for a process id) whose process is
    gone: a process killed with SIGKILL cannot remove its own. A live process's are its own."""
    import glob

    head, tail = (glob.escape(part) for part in pattern.name.split("*", 1))
    for path in pattern.parent.glob(f"{head}*{tail}"):
        pid = path.name[len(pattern.name.split("*")[0]) : len(path.name) - len(tail)]
        if pid.isdigit() and not alive(int(pid)):
            with contextlib.suppress(OSError):
                remove(path)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cache_dir() -> Path:
    """``$ALEXNET_CACHE``, else ``$XDG_CACHE_HOME/alexnet``, else ``~/.cache/alexnet``."""
    given = os.environ.get("ALEXNET_CACHE")
    if given is not None and not given.strip():  # `ALEXNET_CACHE= alexnet cache clear` cleared
        raise UserError("ALEXNET_CACHE is set but empty; unset it for the default cache "  # the
                         "folder, or give it a folder")  # user's own cache, 41.6 GB  # fmt: skip
    if given:
        path, said = Path(given), "ALEXNET_CACHE"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path, said = Path(base) / "alexnet", "the cache folder"
    if path.is_symlink() and not path.exists():
        raise UserError(f"{said} {path} is a symbolic link to nothing, or to itself; point "
                         "ALEXNET_CACHE at a folder")  # fmt: skip
    if path.exists() and not path.is_dir():  # every write under it failed, as "Not a directory"
        raise UserError(f"{said} {path} is a file, not a folder; point ALEXNET_CACHE at a "
                         "folder (made if missing)")  # fmt: skip
    return path
